"""Samplers of the hyper-posterior P(α, S | catalogue) ∝ P(catalogue | α, S) P(α, S).

- :class:`HyperPosterior`: the log density (and gradient) in the hyperprior's unconstrained
  coordinates, with the Jacobian of that map;
- :func:`laplace`: the maximum a posteriori point (BFGS with analytic gradients, polished by
  Newton steps with a Hessian from central differences of the gradient) and the covariance of
  the normal approximation there;
- :func:`importance_sample`: draws of a Student-t proposal built from the Laplace
  approximation (:func:`t_logpdf`), with normalised importance weights and their effective
  sample size;
- :func:`sample_emcee`: the affine-invariant ensemble sampler (:mod:`emcee`), walkers started
  from the Laplace approximation, with acceptance, autocorrelation, effective sample size and
  split-R̂ (:func:`split_rhat`) across walkers.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from massmap_xr.errors import ConvergenceWarning, InferenceError, MassmapWarning
from massmap_xr.inference.hyperprior import HyperPrior
from massmap_xr.inference.likelihood import CatalogLikelihood
from massmap_xr.model.relation import HYPER_NAMES

__all__ = ["HyperPosterior", "check_convergence", "check_int", "importance_sample", "laplace", "sample_emcee", "split_rhat", "t_logpdf"]


class HyperPosterior:
    """ln P(α, S | catalogue) in the hyperprior's unconstrained coordinates (with Jacobian)."""

    def __init__(self, like: CatalogLikelihood, hp: HyperPrior, fixed: dict):
        self.like = like
        self.hp = hp
        self.idx = np.array([HYPER_NAMES.index(k) for k in hp.free])
        self.base = np.array([fixed[k] for k in HYPER_NAMES], dtype=float)

    def full(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        out = np.broadcast_to(self.base, (*theta.shape[:-1], len(HYPER_NAMES))).copy()
        out[..., self.idx] = theta
        return out

    def __call__(self, y: np.ndarray, grad: bool = False, batch: int = 512):
        """ln posterior (and gradient) at unconstrained points ``y`` (n, n_free)."""
        y = np.atleast_2d(np.asarray(y, dtype=float))
        theta = self.hp.to_natural(y)
        lp = self.hp.log_density(theta) + self.hp.log_jacobian(y)
        full = self.full(theta)
        ok = np.isfinite(lp) & np.all(np.isfinite(full), axis=1) & (full[:, 4] > 0) & (full[:, 2] > 0)
        ll = np.full(y.shape[0], -np.inf)
        g = np.zeros(y.shape)
        rows = np.flatnonzero(ok)
        for a in range(0, rows.size, batch):
            r = rows[a:a + batch]
            args = [full[r, j] for j in range(len(HYPER_NAMES))]
            if grad:
                v, gv = self.like.value_and_grad(*args)
                dtheta = gv[:, self.idx] + self.hp.dlog_density(theta[r])
                g[r] = dtheta * self.hp.dtheta_dy(y[r]) + self.hp.dlog_jacobian(y[r])
            else:
                v = self.like(*args)
            ll[r] = v
        post = np.where(ok, ll + lp, -np.inf)
        post = np.where(np.isnan(post), -np.inf, post)
        return (post, g, ll) if grad else (post, ll)


def _hessian(target: HyperPosterior, y0: np.ndarray, h: np.ndarray) -> np.ndarray:
    """-∇² ln posterior at y0 by central differences of the analytic gradient (one batch)."""
    d = y0.size
    pts = np.concatenate([y0 + np.diag(h), y0 - np.diag(h)])
    _, g, _ = target(pts, grad=True)
    hess = (g[:d] - g[d:]) / (2.0 * h[:, None])
    hess = 0.5 * (hess + hess.T)
    return -hess


def laplace(target: HyperPosterior, y_start: np.ndarray, progress: bool, maxiter: int = 1000):
    """MAP point and covariance of the normal approximation, in unconstrained coordinates."""
    from scipy.optimize import minimize

    def fun(y):
        p, g, _ = target(y[None, :], grad=True)
        if not np.isfinite(p[0]):
            return 1e300, np.zeros_like(y)
        return -p[0], -g[0]

    p0 = fun(y_start)[0]
    if not p0 < 1e300:
        raise InferenceError(
            "the hyper-posterior is zero at the starting point "
            f"{dict(zip(target.hp.free, target.hp.to_natural(y_start).tolist(), strict=True))}; "
            "give a start inside the hyperprior's support (start={...})"
        )
    with warnings.catch_warnings():  # precision-loss notices: the Newton polish below takes over
        warnings.simplefilter("ignore", RuntimeWarning)
        res = minimize(fun, y_start, jac=True, method="BFGS", options={"maxiter": maxiter, "gtol": 1e-6})
    y = res.x
    h = np.full(y.size, 1e-4)
    cov = None
    n_newton = 0
    offset = np.inf
    for _ in range(8):  # Newton steps with finite-difference Hessians of the analytic gradient
        hess = _hessian(target, y, h)
        if not np.all(np.linalg.eigvalsh(hess) > 0):
            break
        cov = np.linalg.inv(hess)
        sd = np.sqrt(np.diag(cov))
        h = np.clip(0.05 * sd, 1e-8, 1e-2)
        lp, g, _ = target(y[None, :], grad=True)
        step = np.linalg.solve(hess, g[0])
        offset = float(np.max(np.abs(step) / sd))
        if offset < 1e-3:
            break
        t = 1.0
        while t > 1e-3:
            trial = y + t * step
            if target(trial[None, :])[0][0] > lp[0]:
                y = trial
                n_newton += 1
                break
            t *= 0.5
        else:
            break
    info = {"map_log_posterior": float(target(y[None, :])[0][0]), "map_optimizer_iterations": int(res.nit),
            "map_newton_steps": n_newton, "map_offset_sd": offset}
    if progress:
        print(f"  MAP: ln posterior {info['map_log_posterior']:.8g} after {res.nit} BFGS iterations and {n_newton} "
              f"Newton steps (remaining step {offset:.1e} sd)", file=sys.stderr)
    if cov is None or not np.all(np.linalg.eigvalsh(cov) > 0):
        names = ", ".join(target.hp.free)
        raise InferenceError(
            f"the hyper-posterior of ({names}) has no positive-definite curvature at its maximum "
            f"({dict(zip(target.hp.free, target.hp.to_natural(y).tolist(), strict=True))}): a free "
            "hyperparameter is not constrained by this catalogue; fix it, give it an informative "
            "hyperprior, or use method='emcee'"
        )
    return y, cov, info


def t_logpdf(y: np.ndarray, mean: np.ndarray, chol: np.ndarray, df: float) -> np.ndarray:
    from scipy.special import gammaln

    d = mean.size
    z = np.linalg.solve(chol, (y - mean).T).T
    q = np.sum(z * z, axis=1)
    return (gammaln(0.5 * (df + d)) - gammaln(0.5 * df) - 0.5 * d * np.log(df * np.pi)
            - np.sum(np.log(np.diag(chol))) - 0.5 * (df + d) * np.log1p(q / df))


def split_rhat(draws: np.ndarray) -> np.ndarray:
    """Split-R̂ (Gelman et al. 2013) of draws (chain, draw, param)."""
    n_d = draws.shape[1]
    half = n_d // 2
    if half < 2:
        return np.full(draws.shape[2], np.nan)
    parts = np.concatenate([draws[:, :half], draws[:, n_d - half:]], axis=0)
    means = parts.mean(axis=1)
    w = parts.var(axis=1, ddof=1).mean(axis=0)
    b = half * means.var(axis=0, ddof=1)
    var_plus = (half - 1) / half * w + b / half
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(var_plus / w)


def check_int(name, value, minimum):
    """``value`` as an int, or InferenceError unless it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InferenceError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)




def importance_sample(target: HyperPosterior, y_map: np.ndarray, cov: np.ndarray, n: int, rng: np.random.Generator,
                      *, df: float, scale: float):
    """Importance-sample a Student-t proposal centred on the MAP point with the Laplace covariance.

    Returns ``(theta, weight, log_likelihood, chain, draw, attrs)``: ``n`` draws in natural
    coordinates, their normalised importance weights and catalogue log-likelihoods, the
    ``chain``/``draw`` coordinates (one chain) and the diagnostics (``ess``, ``ess_fraction``,
    ``max_weight``, ``proposal``).  Warns (MassmapWarning) when the effective sample size is
    below a tenth of ``n``.
    """
    if not (df > 2 and np.isfinite(df)) or not (scale > 0 and np.isfinite(scale)):
        raise InferenceError(f"laplace options: need df > 2 and scale > 0, got df={df!r}, scale={scale!r}")
    chol = np.linalg.cholesky(cov) * scale
    zdraw = rng.standard_normal((n, y_map.size))
    chi = rng.chisquare(df, n)
    y = y_map + (zdraw @ chol.T) * np.sqrt(df / chi)[:, None]
    logp, ll = target(y)
    logq = t_logpdf(y, y_map, chol, df)
    logw = logp - logq
    if not np.any(np.isfinite(logw)):
        raise InferenceError("importance sampling failed: every proposal draw has zero posterior density; "
                             "try method='emcee'")
    w = np.exp(logw - np.max(logw))
    w /= w.sum()
    ess = float(1.0 / np.sum(w**2))
    theta = target.hp.to_natural(y)
    chain = np.zeros(n, dtype=np.int64)
    draw = np.arange(n, dtype=np.int64)
    attrs = dict(ess=ess, ess_fraction=ess / n, max_weight=float(w.max()), proposal=f"Student-t (df={df:g}) x {scale:g}")
    if n >= 20 and ess < 0.1 * n:
        warnings.warn(
            f"importance sampling: effective sample size {ess:.1f} of {n} draws; the Laplace proposal fits the "
            "hyper-posterior poorly (small catalogue or a parameter near a bound): use method='emcee' or more draws",
            MassmapWarning, stacklevel=3,
        )
    return theta, w, ll, chain, draw, attrs


#: steps between convergence checks of an adaptive emcee run
CHECK_EVERY = 100
#: longest adaptive emcee run (steps) before giving up with a ConvergenceWarning
MAX_STEPS = 20_000


def _adaptive_length(chain: np.ndarray, n: int, n_walkers: int):
    """(converged, n_burn, thin, tau, rhat) of an adaptive run from its chain (steps, walkers, d) so far.

    Burn-in: 5 integrated autocorrelation times τ of the whole chain (at least 50 steps, at most
    half of it).  Converged when the rest spans >= ``TAU_FACTOR`` τ (τ re-estimated on it), its
    split R-hat is <= ``RHAT_MAX`` and it holds ``n`` draws spaced >= τ / 2 apart."""
    import emcee

    steps = chain.shape[0]
    tau0 = float(np.nanmax(emcee.autocorr.integrated_time(chain, quiet=True, tol=0)))
    burn = int(min(steps // 2, max(50, np.ceil(5 * tau0))))
    kept = chain[burn:]
    tau = float(np.nanmax(emcee.autocorr.integrated_time(kept, quiet=True, tol=0)))
    n_draw = -(-n // n_walkers)
    thin = max(1, kept.shape[0] // n_draw)
    rhat = float(np.nanmax(split_rhat(np.swapaxes(kept, 0, 1))))
    ok = (np.isfinite(tau) and kept.shape[0] >= TAU_FACTOR * tau and rhat <= RHAT_MAX
          and thin >= max(1.0, tau / 2))
    return bool(ok), burn, thin, tau, rhat


def sample_emcee(target: HyperPosterior, y_map: np.ndarray, cov: np.ndarray, n: int, rng: np.random.Generator,
                 *, progress: bool, n_walkers=None, n_burn=None, thin=None, moves=None, max_steps=MAX_STEPS):
    """Run emcee's ensemble sampler with walkers started from the Laplace approximation.

    ``n_walkers`` defaults to max(16, 4 × n_free), made even; ``moves`` to emcee's differential-evolution
    moves (80 % ``DEMove``, 20 % ``DESnookerMove``), whose integrated autocorrelation time on the
    seed field is about 11 steps against 25–30 for the default stretch move.  With ``n_burn`` and ``thin`` left
    at None the run is adaptive: it continues in blocks of ``CHECK_EVERY`` steps until the
    chains after a burn-in of 5 τ span ``TAU_FACTOR`` (50) autocorrelation times τ, their split
    R-hat is <= 1.01 and they hold ``n`` draws at least τ / 2 apart (or ``max_steps`` is reached,
    which leaves a :class:`~massmap_xr.errors.ConvergenceWarning`); the ``n`` draws (rounded up to a
    multiple of the number of walkers) are then spread evenly over the kept steps.  Giving
    ``n_burn`` or ``thin`` runs a fixed length instead: ``n_burn`` (default 300) steps of burn-in,
    then every ``thin``-th (default 20) step, enough for ``n`` draws.  Returns ``(theta, weight,
    log_likelihood, chain, draw, attrs)`` like :func:`importance_sample`, with uniform weights and
    the MCMC diagnostics in ``attrs`` (acceptance fractions, ``autocorr_time_<name>``,
    ``ess_<name>``, ``rhat_<name>`` on the kept steps, ``rhat_max``, ``ess``, ``ess_fraction``,
    ``adaptive``).
    """
    import emcee

    hp = target.hp
    d = y_map.size
    n_walkers = check_int("n_walkers", max(16, 4 * d + (4 * d) % 2) if n_walkers is None else n_walkers, 2 * d)
    n_walkers += n_walkers % 2
    adaptive = n_burn is None and thin is None
    n_draw = -(-n // n_walkers)
    chol = np.linalg.cholesky(cov)
    p0 = y_map + rng.standard_normal((n_walkers, d)) @ chol.T

    def log_prob(yy):
        return target(yy)[0]

    if moves is None:  # differential evolution: half the autocorrelation time of the stretch move here
        moves = [(emcee.moves.DEMove(), 0.8), (emcee.moves.DESnookerMove(), 0.2)]
    sampler = emcee.EnsembleSampler(n_walkers, d, log_prob, vectorize=True, moves=moves)
    sampler.random_state = np.random.RandomState(int(rng.integers(2**31 - 1))).get_state()
    if adaptive:
        max_steps = check_int("max_steps", max_steps, CHECK_EVERY)
        from tqdm.auto import tqdm

        state = p0
        with tqdm(desc="emcee (until converged)", unit="step", file=sys.stderr, disable=not progress,
                  mininterval=0.5) as bar:
            while True:
                state = sampler.run_mcmc(state, CHECK_EVERY)
                bar.update(CHECK_EVERY)
                done, n_burn, thin, tau, rhat = _adaptive_length(sampler.get_chain(), n, n_walkers)
                bar.set_postfix_str(f"tau {tau:.1f}, kept {sampler.iteration - n_burn} of {TAU_FACTOR * tau:.0f}, "
                                    f"R-hat {rhat:.3f}")
                if done or sampler.iteration + CHECK_EVERY > max_steps:
                    break
        n_steps = sampler.iteration
    else:
        n_burn = check_int("n_burn", 300 if n_burn is None else n_burn, 0)
        thin = check_int("thin", 20 if thin is None else thin, 1)
        n_steps = n_burn + n_draw * thin
        sampler.run_mcmc(p0, n_steps, progress=progress)
    chain_y = sampler.get_chain()  # (steps, walkers, d)
    kept = chain_y[n_burn:]
    draws_y = kept[thin - 1::thin][-n_draw:]  # (n_draw, walkers, d): the last n_draw of the thinned steps
    if draws_y.shape[0] < n_draw:  # an adaptive run capped by max_steps before holding n draws
        warnings.warn(f"emcee: the run stopped at max_steps={n_steps} with {draws_y.shape[0]} draws per walker "
                      f"instead of {n_draw}; raise max_steps", ConvergenceWarning, stacklevel=4)
        n_draw = draws_y.shape[0]
    tau = emcee.autocorr.integrated_time(kept, quiet=True, tol=0) if kept.shape[0] > 1 else np.full(d, np.nan)
    rhat = split_rhat(hp.to_natural(np.swapaxes(kept, 0, 1)))
    acc = sampler.acceptance_fraction
    y = np.swapaxes(draws_y, 0, 1).reshape(-1, d)
    theta = hp.to_natural(y)
    logp_all = sampler.get_log_prob()[n_burn:][thin - 1::thin][-n_draw:]
    logp = np.swapaxes(logp_all, 0, 1).ravel()
    chain = np.repeat(np.arange(n_walkers, dtype=np.int64), n_draw)
    draw = np.tile(np.arange(n_draw, dtype=np.int64), n_walkers)
    w = np.full(y.shape[0], 1.0 / y.shape[0])
    lp_nat = hp.log_density(theta)
    ll = logp - lp_nat - hp.log_jacobian(y)
    n_kept = kept.shape[0] * n_walkers
    attrs = dict(
        n_walkers=n_walkers, n_burn=int(n_burn), thin=int(thin), n_steps=int(n_steps), adaptive=int(adaptive),
        acceptance_fraction=float(acc.mean()), acceptance_fraction_min=float(acc.min()),
        acceptance_fraction_max=float(acc.max()),
        rhat_max=float(np.nanmax(rhat)) if np.any(np.isfinite(rhat)) else float("nan"),
        autocorr_reliable=int(kept.shape[0] >= TAU_FACTOR * float(np.nanmax(tau))),
    )
    for j, k in enumerate(hp.free):
        attrs[f"autocorr_time_{k}"] = float(tau[j])
        attrs[f"ess_{k}"] = float(n_kept / tau[j]) if tau[j] > 0 else float("nan")
        attrs[f"rhat_{k}"] = float(rhat[j])
    attrs["ess"] = float(min(attrs[f"ess_{k}"] for k in hp.free))
    attrs["ess_fraction"] = attrs["ess"] / n_kept
    check_convergence(attrs, hp.free, kept.shape[0], n_burn, thin)
    return theta, w, ll, chain, draw, attrs


#: split-R-hat above which a run counts as not converged
RHAT_MAX = 1.01
#: chain length, in integrated autocorrelation times, for a reliable estimate of tau
TAU_FACTOR = 50


def check_convergence(attrs: dict, free, n_kept_steps: int, n_burn: int, thin: int) -> bool:
    """ConvergenceWarning (and False) unless R-hat <= 1.01 and the kept chains span >= 50 tau.

    The message names the parameters at fault and the number of steps after burn-in that
    would suffice (50 × the largest τ, at least the current length × (R̂ - 1)/0.01 for an R̂
    problem), and the burn-in to use (at least 5 τ).  ``attrs`` gains ``converged`` (0/1) and
    ``n_steps_suggested``.
    """
    tau = np.array([attrs[f"autocorr_time_{k}"] for k in free], dtype=float)
    rhat = np.array([attrs[f"rhat_{k}"] for k in free], dtype=float)
    tau_max = float(np.nanmax(tau)) if np.any(np.isfinite(tau)) else float("nan")
    problems = []
    bad_r = [f"{k} {r:.3f}" for k, r in zip(free, rhat, strict=True) if not r <= RHAT_MAX]
    if bad_r:
        problems.append(f"split R-hat > {RHAT_MAX} ({', '.join(bad_r)})")
    if not n_kept_steps >= TAU_FACTOR * tau_max:
        problems.append(f"the chains after burn-in ({n_kept_steps} steps) are shorter than {TAU_FACTOR} "
                        f"autocorrelation times (tau max {tau_max:.1f}), so tau is unreliable")
    need = TAU_FACTOR * tau_max if np.isfinite(tau_max) else 2.0 * n_kept_steps
    if bad_r and np.any(np.isfinite(rhat)):
        need = max(need, n_kept_steps * (float(np.nanmax(rhat)) - 1.0) / (RHAT_MAX - 1.0))
    need = int(np.ceil(max(need, n_kept_steps + 1) / thin) * thin) if problems else n_kept_steps
    burn = max(n_burn, int(np.ceil(5 * tau_max))) if np.isfinite(tau_max) else 2 * n_burn
    attrs["converged"] = int(not problems)
    attrs["n_steps_suggested"] = int(need)
    if problems:
        warnings.warn(
            f"emcee: not converged: {'; '.join(problems)}; run about {need} steps after burn-in "
            f"(n_burn={burn}, n={need // thin} x walkers draws at thin={thin}, or a larger thin)",
            ConvergenceWarning, stacklevel=4,
        )
    return not problems
