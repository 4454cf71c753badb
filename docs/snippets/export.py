import io

import onnxruntime
import torch
from torch import nn

import ember


class Net(ember.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        self.example_input_array = torch.zeros(1, 4)   # the default example input of every export
    def forward(self, x):
        return self.net(x)

model = Net()
x = torch.randn(5, 4)

program = model.to_exported_program("model.pt2")          # torch.export; dimension 0 is dynamic
loaded = torch.export.load("model.pt2").module()
print(torch.allclose(loaded(x), model(x)))

model.to_onnx("model.onnx")                               # one self-contained file, dynamic batch axis
session = onnxruntime.InferenceSession("model.onnx")
(out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
print(out.shape, session.get_inputs()[0].name)

buffer = io.BytesIO()
model.to_torchscript(buffer)                              # every export takes a path or a binary file object
buffer.seek(0)
print(torch.jit.load(buffer)(x).shape)
