"""Train a JAX MLP on scikit-learn's digits: jax.grad and anyoptim's pure_step under jax.jit.

``optimizer.pure_step(parameters, gradients, state)`` is a pure function, so the whole training
step (loss, gradients, AdamW update with a cosine schedule) is one jitted function; parameters
and optimizer state are donated, so XLA updates their buffers in place.
Needs: pip install jax scikit-learn anyoptim
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import anyoptim as optim

x, y = load_digits(return_X_y=True)
rng = np.random.default_rng(0)
order = rng.permutation(len(x))
test, train = order[:360], order[360:]
mean, std = x[train].mean(0), x[train].std(0) + 1e-8
x = jnp.asarray((x - mean) / std, jnp.float32)
y = jnp.asarray(y)


def layer(key, n_in, n_out):
    bound = 1 / np.sqrt(n_in)
    return {"weight": jax.random.uniform(key, (n_out, n_in), jnp.float32, -bound, bound),
            "bias": jnp.zeros(n_out, jnp.float32)}


def forward(params, xb):
    hidden = jnp.tanh(xb @ params["hidden"]["weight"].T + params["hidden"]["bias"])
    return hidden @ params["out"]["weight"].T + params["out"]["bias"]


def loss_fn(params, xb, yb):
    log_probs = jax.nn.log_softmax(forward(params, xb))
    return -jnp.mean(jnp.take_along_axis(log_probs, yb[:, None], axis=1))


k1, k2 = jax.random.split(jax.random.key(0))
params = {"hidden": layer(k1, 64, 128), "out": layer(k2, 128, 10)}
epochs, batches = 20, 23
optimizer = optim.AdamW(learning_rate=optim.cosine_decay(1e-3, epochs * batches, 1e-5))
optimizer.init(params)
state = optimizer.state


@partial(jax.jit, donate_argnums=(0, 1))  # params and state are updated in place
def train_step(params, state, xb, yb):
    loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
    params, state = optimizer.pure_step(params, grads, state)
    return params, state, loss


for _epoch in range(epochs):
    for batch in np.array_split(rng.permutation(train), batches):
        params, state, loss = train_step(params, state, x[batch], y[batch])

accuracy = float(jnp.mean(forward(params, x[test]).argmax(1) == y[test]))
print(f"final loss {float(loss):.4f}, test accuracy {accuracy:.2%} after {int(state['step'])} steps")
