"""Train a small MLP on scikit-learn's digits with anyoptim on plain NumPy arrays.

Gradients come from autograd; anyoptim updates the parameter dict in place.
Needs: pip install "anyoptim[cli]"   (numpy, scikit-learn, autograd)
"""

import autograd.numpy as anp
import numpy as np
from autograd import value_and_grad
from autograd.scipy.special import logsumexp
from sklearn.datasets import load_digits

import anyoptim as optim

x, y = load_digits(return_X_y=True)
rng = np.random.default_rng(0)
order = rng.permutation(len(x))
test, train = order[:360], order[360:]
mean, std = x[train].mean(0), x[train].std(0) + 1e-8
x = ((x - mean) / std).astype(np.float32)


def layer(n_in, n_out):
    bound = 1 / np.sqrt(n_in)
    return {
        "weight": rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32),
        "bias": np.zeros(n_out, np.float32),
    }


def forward(params, xb):
    hidden = anp.tanh(xb @ params["hidden"]["weight"].T + params["hidden"]["bias"])
    return hidden @ params["out"]["weight"].T + params["out"]["bias"]


def loss_fn(params, xb, yb):
    logits = forward(params, xb)
    log_probs = logits - logsumexp(logits, axis=1, keepdims=True)
    return -anp.mean(log_probs[np.arange(len(yb)), yb])


params = {"hidden": layer(64, 128), "out": layer(128, 10)}
optimizer = optim.AdamW(learning_rate=optim.cosine_decay(1e-3, 20 * 23, 1e-5))
loss_and_grad = value_and_grad(loss_fn)

for _epoch in range(20):
    for batch in np.array_split(rng.permutation(train), 23):
        loss, grads = loss_and_grad(params, x[batch], y[batch])
        optimizer.update(params, grads)  # NumPy arrays are updated in place

accuracy = np.mean(forward(params, x[test]).argmax(1) == y[test])
print(f"final loss {loss:.4f}, test accuracy {accuracy:.2%} after {int(optimizer.step)} steps")
