"""Train an mlx.nn MLP on scikit-learn's digits with anyoptim, as with mlx.optimizers.

The first half of the epochs uses the eager MLX recipe (nn.value_and_grad, optimizer.update,
mx.eval); the second half compiles the same step with mx.compile(inputs=state, outputs=state),
which works because anyoptim keeps its state dict (and every per-parameter dict) the same
object across updates. Needs: pip install mlx scikit-learn anyoptim
"""

from functools import partial

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from sklearn.datasets import load_digits

import anyoptim as optim

mx.random.seed(0)
x, y = load_digits(return_X_y=True)
rng = np.random.default_rng(0)
order = rng.permutation(len(x))
test, train = order[:360], order[360:]
mean, std = x[train].mean(0), x[train].std(0) + 1e-8
x = mx.array(((x - mean) / std).astype(np.float32))
y = mx.array(y)

model = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 10))
epochs, batches = 20, 23
optimizer = optim.AdamW(learning_rate=optim.cosine_decay(1e-3, epochs * batches, 1e-5))
optimizer.init(model.trainable_parameters())


def loss_fn(model, xb, yb):
    return nn.losses.cross_entropy(model(xb), yb, reduction="mean")


loss_and_grad = nn.value_and_grad(model, loss_fn)
state = [model.state, optimizer.state]


@partial(mx.compile, inputs=state, outputs=state)
def compiled_step(xb, yb):
    loss, grads = loss_and_grad(model, xb, yb)
    optimizer.update(model, grads)
    return loss


for epoch in range(epochs):
    for batch in np.array_split(rng.permutation(train), batches):
        xb, yb = x[mx.array(batch)], y[mx.array(batch)]
        if epoch < epochs // 2:  # eager
            loss, grads = loss_and_grad(model, xb, yb)
            optimizer.update(model, grads)
        else:  # compiled
            loss = compiled_step(xb, yb)
        mx.eval(model.parameters(), optimizer.state, loss)

accuracy = mx.mean(mx.argmax(model(x[mx.array(test)]), axis=1) == y[mx.array(test)]).item()
print(f"final loss {loss.item():.4f}, test accuracy {accuracy:.2%} after {optimizer.step.item()} steps")
