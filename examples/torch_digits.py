"""Train a small torch.nn.Module on scikit-learn's digits with anyoptim.AdamW.

``anyoptim.module_grads(model)`` collects the gradients keyed like ``named_parameters()``;
``optimizer.update(model, grads)`` writes the new values into the same Parameter objects
(in place, without autograd history). Needs: pip install torch scikit-learn anyoptim
"""

import numpy as np
import torch
from sklearn.datasets import load_digits

import anyoptim as optim

torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
rng = np.random.default_rng(0)
order = rng.permutation(len(x))
test, train = order[:360], order[360:]
mean, std = x[train].mean(0), x[train].std(0) + 1e-8
x = torch.tensor((x - mean) / std, dtype=torch.float32)
y = torch.tensor(y)

model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 10))
epochs, batches = 20, 23
optimizer = optim.AdamW(
    learning_rate=optim.cosine_decay(1e-3, epochs * batches, 1e-5), weight_decay=0.01
)

for _epoch in range(epochs):
    for batch in np.array_split(rng.permutation(train), batches):
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        optimizer.update(model, optim.module_grads(model))  # in place, same Parameters

with torch.no_grad():
    accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
print(f"final loss {loss.item():.4f}, test accuracy {accuracy:.2%} after {int(optimizer.step)} steps")
