"""numba kernels of the lensing maps: pixel-integrated convergence and near-field shear.

Geometry is in pixel units around each halo: a pixel is the unit square centred on its
centre, at offset ``(dx, dy)`` from the halo.  See :mod:`massmap_xr.lensing.maps` for the method.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from massmap_xr.lensing.profiles import f_truncated, f_untruncated, h_truncated, h_untruncated, nfw_mass_factor

#: innermost disc (pixel units): its mass is spread by area over the pixels it overlaps
R_IN = 0.05
#: ratio and largest width (pixel units) of consecutive annuli
Q_RATIO = 1.12
W_MAX = 0.2
#: shear tables: innermost radius and ratio of the log-spaced radii
RS_IN = 0.02
QS_RATIO = 1.2


@nb.njit(cache=True)
def _radii(r_out, r_in, q, wmax):
    """0, r_in, r_in q, ... (steps capped at wmax) up to the first radius >= r_out.

    The sequence does not depend on r_out beyond where it stops, so maps do not depend on
    how the samples are chunked.
    """
    n = 2
    r = r_in
    while r < r_out:
        r = min(r * q, r + wmax)
        n += 1
    out = np.empty(n)
    out[0] = 0.0
    out[1] = r_in
    for k in range(2, n):
        out[k] = min(out[k - 1] * q, out[k - 1] + wmax)
    return out


@nb.njit(cache=True)
def _q(x, y, r):
    """Signed area of {0 <= u <= x, 0 <= v <= y (signed), u^2 + v^2 <= r^2}."""
    s = 1.0
    if x < 0.0:
        s = -s
        x = -x
    if y < 0.0:
        s = -s
        y = -y
    if x * x + y * y <= r * r:
        return s * x * y
    x = min(x, r)
    y = min(y, r)
    us = math.sqrt(max(r * r - y * y, 0.0))
    if us >= x:
        return s * x * y
    fx = 0.5 * (x * math.sqrt(max(r * r - x * x, 0.0)) + r * r * math.asin(min(x / r, 1.0)))
    fu = 0.5 * (us * math.sqrt(max(r * r - us * us, 0.0)) + r * r * math.asin(min(us / r, 1.0)))
    return s * (y * us + fx - fu)


@nb.njit(cache=True)
def _disc_rect(r, x0, x1, y0, y1):
    """Area of the disc of radius r (centred at 0) inside the rectangle [x0, x1] x [y0, y1]."""
    if r <= 0.0:
        return 0.0
    return _q(x1, y1, r) - _q(x0, y1, r) - _q(x1, y0, r) + _q(x0, y0, r)


@nb.njit(cache=True)
def _m2d(R, m, rs, c, rcut, truncated):
    """Projected mass (M_sun) inside R (Mpc) of a halo of mass m, r_s = rs, concentration c."""
    if truncated:
        if R >= rcut:
            return m
        return m * h_truncated(R / rs, c) / nfw_mass_factor(c)
    return m * h_untruncated(min(R, rcut) / rs) / nfw_mass_factor(c)


@nb.njit(cache=True)
def _sigma(R, m, rs, c, rcut, truncated):
    """Surface density (M_sun Mpc^-2) at R (Mpc); 0 beyond the cut."""
    if R >= rcut:
        return 0.0
    norm = m / (2.0 * math.pi * rs * rs * nfw_mass_factor(c))  # 2 rho_s r_s
    if truncated:
        return norm * f_truncated(R / rs, c)
    return norm * f_untruncated(R / rs)


@nb.njit(cache=True)
def _m2d_sigma(R, m, rs, c, rcut, truncated):
    """(M_2D(<R), Sigma(R)) for R < rcut."""
    x = R / rs
    mc = nfw_mass_factor(c)
    if truncated:
        return m * h_truncated(x, c) / mc, m / (2.0 * math.pi * rs * rs * mc) * f_truncated(x, c)
    return m * h_untruncated(x) / mc, m / (2.0 * math.pi * rs * rs * mc) * f_untruncated(x)


@nb.njit(parallel=True, cache=True)
def far_field_kernel(px, py, r_near, mu, sx, sy, nx, ny):
    """Point-mass shear (2, P, S) at pixel centres farther than r_near[h, s] from each halo."""
    H, S = mu.shape
    P = nx * ny
    g = np.zeros((2, P, S))
    for p in nb.prange(P):
        xc = p % nx
        yc = p // nx
        for h in range(H):
            dx = (xc - px[h]) * sx
            dy = (yc - py[h]) * sy
            r2 = dx * dx + dy * dy
            inv = 1.0 / (math.pi * r2 * r2) if r2 > 0 else 0.0
            t1 = (dy * dy - dx * dx) * inv
            t2 = -2.0 * dx * dy * inv
            for s in range(S):
                if r2 > r_near[h, s] * r_near[h, s]:
                    g[0, p, s] += mu[h, s] * t1
                    g[1, p, s] += mu[h, s] * t2
    return g


@nb.njit(cache=True)
def flat_candidates(px, py, radius, nx, ny):
    """Pixels of a grid whose unit squares may overlap the disc ``radius`` around each halo.

    Returns CSR ``(ptr, ids, dx, dy)``: ids are ``row * nx + col`` (-1 outside the grid),
    ``dx, dy`` the pixel-centre offsets from the halo in pixel units.
    """
    H = px.size
    ptr = np.zeros(H + 1, dtype=np.int64)
    for h in range(H):
        c0 = math.ceil(px[h] - radius[h] - 0.5)
        c1 = math.floor(px[h] + radius[h] + 0.5)
        r0 = math.ceil(py[h] - radius[h] - 0.5)
        r1 = math.floor(py[h] + radius[h] + 0.5)
        ptr[h + 1] = ptr[h] + max(c1 - c0 + 1, 0) * max(r1 - r0 + 1, 0)
    n = ptr[H]
    ids = np.empty(n, dtype=np.int64)
    dx = np.empty(n)
    dy = np.empty(n)
    for h in range(H):
        c0 = math.ceil(px[h] - radius[h] - 0.5)
        c1 = math.floor(px[h] + radius[h] + 0.5)
        r0 = math.ceil(py[h] - radius[h] - 0.5)
        r1 = math.floor(py[h] + radius[h] + 0.5)
        e = ptr[h]
        for row in range(r0, r1 + 1):
            for col in range(c0, c1 + 1):
                ids[e] = row * nx + col if (0 <= row < ny and 0 <= col < nx) else -1
                dx[e] = col - px[h]
                dy[e] = row - py[h]
                e += 1
    return ptr, ids, dx, dy


@nb.njit(cache=True)
def _halo_weights(r, dxs, dys):
    """Pixel-annulus overlap fractions of one halo: entries (pixel j, annulus k, fraction).

    Fractions are normalised per annulus (they sum to 1 over the candidate pixels), so that
    the mass of every annulus is deposited exactly.
    """
    K = r.size - 1
    n = dxs.size
    kk0 = np.empty(n, dtype=np.int64)
    kk1 = np.empty(n, dtype=np.int64)
    total = 0
    for j in range(n):
        x0, x1 = dxs[j] - 0.5, dxs[j] + 0.5
        y0, y1 = dys[j] - 0.5, dys[j] + 0.5
        ax = max(0.0, x0, -x1)
        ay = max(0.0, y0, -y1)
        rmin = math.sqrt(ax * ax + ay * ay)
        rmax = math.sqrt(max(x0 * x0, x1 * x1) + max(y0 * y0, y1 * y1))
        k0 = np.searchsorted(r, rmin, side="right") - 1
        k1 = np.searchsorted(r, rmax, side="left")
        k0 = max(k0, 0)
        k1 = min(k1, K)
        kk0[j] = k0
        kk1[j] = max(k1, k0)
        total += kk1[j] - k0
    ej = np.empty(total, dtype=np.int64)
    ek = np.empty(total, dtype=np.int64)
    ew = np.empty(total)
    ec = np.empty(total)
    colsum = np.zeros(K)
    e = 0
    for j in range(n):
        x0, x1 = dxs[j] - 0.5, dxs[j] + 0.5
        y0, y1 = dys[j] - 0.5, dys[j] + 0.5
        prev = _disc_rect(r[kk0[j]], x0, x1, y0, y1)
        for k in range(kk0[j], kk1[j]):
            cur = _disc_rect(r[k + 1], x0, x1, y0, y1)
            ej[e] = j
            ek[e] = k
            ew[e] = cur - prev
            ec[e] = prev
            colsum[k] += cur - prev
            prev = cur
            e += 1
    for i in range(total):
        s = colsum[ek[i]]
        ew[i] = ew[i] / s if s > 0 else 0.0
    # annuli no candidate square overlaps (gaps between HEALPix cells' squares): their mass
    # goes to the nearest candidate
    lost = colsum <= 0.0
    jn = 0
    dmin = np.inf
    for j in range(n):
        d = dxs[j] * dxs[j] + dys[j] * dys[j]
        if d < dmin:
            dmin = d
            jn = j
    return ej, ek, ew, ec, lost, jn


@nb.njit(parallel=True, cache=True)
def kappa_kernel(ptr, ids, dxs, dys, r_out, fac, scale, mass, rs, conc, rcut, truncated, n_cells, n_threads):
    """Pixel-averaged convergence, (sample, cell), of halos (halo, sample); halos split over threads."""
    H, S = mass.shape
    out = np.zeros((n_threads, S, n_cells))
    for t in nb.prange(n_threads):
        h0 = (H * t) // n_threads
        h1 = (H * (t + 1)) // n_threads
        for h in range(h0, h1):
            if fac[h] <= 0.0 or r_out[h] <= 0.0:
                continue
            a, b = ptr[h], ptr[h + 1]
            rb = R_IN  # the inner disc may grow to the edge of the square holding the halo
            for j in range(a, b):
                if abs(dxs[j]) < 0.5 and abs(dys[j]) < 0.5:
                    rb = max(rb, min(0.5 - abs(dxs[j]), 0.5 - abs(dys[j])))
            r = _radii(r_out[h], rb, Q_RATIO, W_MAX)
            K = r.size - 1
            ej, ek, ew, ec, lost, jn = _halo_weights(r, dxs[a:b], dys[a:b])
            cum = np.empty(K + 1)
            wcut = np.empty(ej.size)
            for s in range(S):
                m = mass[h, s]
                if m <= 0.0:
                    continue
                cum[0] = 0.0
                kc = K  # annulus holding the profile's cut (K: none)
                for k in range(1, K + 1):
                    if kc < K:
                        cum[k] = cum[k - 1]
                        continue
                    R = r[k] * scale[h]
                    cum[k] = _m2d(R, m, rs[h, s], conc[h, s], rcut[h, s], truncated)
                    if R >= rcut[h, s]:
                        kc = k - 1
                # the annulus cut by the profile edge: share its mass by the overlaps of the
                # part inside the cut only (exact areas, per sample)
                rc = rcut[h, s] / scale[h]
                wsum = 0.0
                if kc < K:
                    for i in range(ej.size):
                        if ek[i] == kc:
                            j = a + ej[i]
                            x0, y0 = dxs[j] - 0.5, dys[j] - 0.5
                            wcut[i] = _disc_rect(rc, x0, x0 + 1.0, y0, y0 + 1.0) - ec[i]
                            wsum += wcut[i]
                f = fac[h]
                for i in range(ej.size):
                    cell = ids[a + ej[i]]
                    if cell < 0:
                        continue
                    k = ek[i]
                    w = ew[i]
                    if k == kc:
                        w = wcut[i] / wsum if wsum > 0 else w
                    out[t, s, cell] += f * w * (cum[k + 1] - cum[k])
                if b > a and ids[a + jn] >= 0:
                    dm = 0.0
                    for k in range(K):
                        if lost[k]:
                            dm += cum[k + 1] - cum[k]
                    out[t, s, ids[a + jn]] += f * dm
    return out


@nb.njit(cache=True)
def _shear_points(dxs, dys, sx, sy, r_near):
    """Sub-pixel sampling points of one halo's near-field pixels: (j, r, cos 2phi, sin 2phi, weight).

    Only pixels whose centre lies within ``r_near`` are near-field (the others get the
    point-mass far field); 8 x 8 points per pixel within 1.5 pixels of the halo, 4 x 4 within
    3, 2 x 2 within 6, the centre beyond.
    """
    n = dxs.size
    counts = np.empty(n, dtype=np.int64)
    total = 0
    for j in range(n):
        d = math.sqrt(dxs[j] * dxs[j] + dys[j] * dys[j])
        ns = 8 if d < 1.5 else (4 if d < 3.0 else (2 if d < 6.0 else 1))
        if d * d > r_near * r_near:
            ns = 0
        counts[j] = ns
        total += ns * ns
    pj = np.empty(total, dtype=np.int64)
    pr = np.empty(total)
    pc = np.empty(total)
    psn = np.empty(total)
    pw = np.empty(total)
    e = 0
    for j in range(n):
        ns = counts[j]
        if ns == 0:
            continue
        w = 1.0 / (ns * ns)
        for a in range(ns):
            for b in range(ns):
                x = (dxs[j] - 0.5 + (a + 0.5) / ns) * sx  # east
                y = (dys[j] - 0.5 + (b + 0.5) / ns) * sy  # north
                r2 = x * x + y * y
                pj[e] = j
                pr[e] = math.sqrt(r2)
                if r2 > 0:
                    pc[e] = (x * x - y * y) / r2
                    psn[e] = 2.0 * x * y / r2
                else:
                    pc[e] = 0.0
                    psn[e] = 0.0
                pw[e] = w
                e += 1
    return pj, pr, pc, psn, pw


@nb.njit(parallel=True, cache=True)
def shear_near_kernel(ptr, ids, dxs, dys, r_near, sx, sy, fac, scale, mass, rs, conc, rcut, truncated,
                      n_cells, n_threads):
    """Pixel-averaged (gamma1, gamma2) of the halos within ``r_near`` (pixel units) of each halo.

    gamma_t(r) is tabulated per halo and sample as r^2 gamma_t on log-spaced radii and
    interpolated linearly in ln r at the sub-pixel points; gamma1 + i gamma2 = -gamma_t e^{2 i phi}
    with phi measured from east towards north.
    """
    H, S = mass.shape
    out = np.zeros((n_threads, 2, S, n_cells))
    for t in nb.prange(n_threads):
        h0 = (H * t) // n_threads
        h1 = (H * (t + 1)) // n_threads
        for h in range(h0, h1):
            if fac[h] <= 0.0:
                continue
            a, b = ptr[h], ptr[h + 1]
            rn_max = 0.0
            for s in range(S):
                rn_max = max(rn_max, r_near[h, s])
            pj, pr, pc, psn, pw = _shear_points(dxs[a:b], dys[a:b], sx, sy, rn_max)
            rmax = rn_max + 0.75
            dl = math.log(QS_RATIO)
            K = max(2, int(math.ceil(math.log(rmax / RS_IN) / dl)) + 2)
            lr0 = math.log(RS_IN)
            # table index and weight of every point (sample independent)
            pk = np.empty(pr.size, dtype=np.int64)
            pt = np.empty(pr.size)
            for i in range(pr.size):
                if pr[i] <= RS_IN:
                    pk[i] = 0
                    pt[i] = 0.0
                else:
                    u = (math.log(pr[i]) - lr0) / dl
                    k = min(int(u), K - 2)
                    pk[i] = k
                    pt[i] = min(u - k, 1.0)
            g = np.empty(K)
            for s in range(S):
                m = mass[h, s]
                if m <= 0.0:
                    continue
                beyond = False
                for k in range(K):
                    if beyond:
                        g[k] = g[k - 1]
                        continue
                    rp = math.exp(lr0 + k * dl)
                    R = rp * scale[h]
                    if R >= rcut[h, s]:
                        g[k] = fac[h] * _m2d(rcut[h, s], m, rs[h, s], conc[h, s], rcut[h, s], truncated) / math.pi
                        beyond = True
                        continue
                    m2, sg = _m2d_sigma(R, m, rs[h, s], conc[h, s], rcut[h, s], truncated)
                    g[k] = fac[h] * (m2 / math.pi - rp * rp * scale[h] * scale[h] * sg)  # r^2 gamma_t
                rn2 = r_near[h, s] * r_near[h, s]
                for i in range(pr.size):
                    cell = ids[a + pj[i]]
                    if cell < 0:
                        continue
                    j = a + pj[i]
                    if dxs[j] * dxs[j] + dys[j] * dys[j] > rn2:
                        continue  # this sample's far field
                    k = pk[i]
                    gr = g[k] + (g[k + 1] - g[k]) * pt[i]
                    r = max(pr[i], RS_IN)
                    gt = gr / (r * r) * pw[i]
                    out[t, 0, s, cell] -= gt * pc[i]
                    out[t, 1, s, cell] -= gt * psn[i]
    return out
