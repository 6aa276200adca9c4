"""Hand-written BN functions on JAX arrays, in the form JAX users write them (functional: the
new running statistics are returned), written for tests/test_hand_written.py. Flax's
conventions: momentum weighs the old value, biased variances, beta for one value."""
import jax
import jax.numpy as jnp


def _axes(x, axis):
    return tuple(a for a in range(x.ndim) if a != axis % x.ndim)


def _shape(x, axis):
    s = [1] * x.ndim
    s[axis % x.ndim] = -1
    return s


def batch_norm(x, gamma, beta, running_mean, running_var, *, training, momentum=0.99, eps=1e-5, axis=-1):
    axes, s = _axes(x, axis), _shape(x, axis)
    if training:
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean.reshape(s)), axis=axes)
        running_mean = momentum * running_mean + (1 - momentum) * mean
        running_var = momentum * running_var + (1 - momentum) * var
    else:
        mean, var = running_mean, running_var
    y = (x - mean.reshape(s)) * jax.lax.rsqrt(var.reshape(s) + eps)
    return y * gamma.reshape(s) + beta.reshape(s), running_mean, running_var


def batch_norm_stats_not_updated_in_eval_but_batch_used(x, gamma, beta, running_mean, running_var, *, training,
                                                       momentum=0.99, eps=1e-5, axis=-1):
    """The classic functional slip: eval normalizes with the batch, the running statistics unused."""
    y, rm, rv = batch_norm(x, gamma, beta, running_mean, running_var, training=True, momentum=momentum, eps=eps,
                           axis=axis)
    return (y, rm, rv) if training else (y, running_mean, running_var)


@jax.custom_vjp
def _normalize(x, gamma, beta, eps):
    mean = jnp.mean(x, axis=0)
    var = jnp.mean(jnp.square(x - mean), axis=0)
    return gamma * (x - mean) * jax.lax.rsqrt(var + eps) + beta


def _normalize_fwd(x, gamma, beta, eps):
    mean = jnp.mean(x, axis=0)
    var = jnp.mean(jnp.square(x - mean), axis=0)
    inv = jax.lax.rsqrt(var + eps)
    return gamma * (x - mean) * inv + beta, ((x - mean) * inv, gamma, inv)


def _normalize_bwd(res, dy):
    x_hat, gamma, inv = res
    g = dy * gamma
    dx = (g - g.mean(0) - x_hat * (g * x_hat).mean(0)) * inv   # the paper's closed form
    return dx, (dy * x_hat).sum(0), dy.sum(0), None


_normalize.defvjp(_normalize_fwd, _normalize_bwd)


def custom_vjp_2d(x, gamma, beta, *, training, eps):
    """(N, D) only, no running statistics, a custom_vjp backward."""
    if x.ndim != 2:
        raise NotImplementedError("(N, D) inputs only")
    return _normalize(x, gamma, beta, eps)


def branches_on_values(x, gamma, beta, running_mean, running_var, *, training, momentum=0.99, eps=1e-5, axis=-1):
    """Python control flow on an array's value: runs eagerly, cannot be traced by jax.jit."""
    if float(jnp.abs(x).max()) == 0.0:
        return beta * jnp.ones_like(x), running_mean, running_var
    return batch_norm(x, gamma, beta, running_mean, running_var, training=training, momentum=momentum, eps=eps,
                      axis=axis)
