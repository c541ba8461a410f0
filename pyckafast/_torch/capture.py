"""Forward hooks that record each hooked layer's output, flattened per sample, once per batch.

The one copy a hook makes is needed: a later in-place layer (``ReLU(inplace=True)``) would
otherwise change the recorded output before the batch reaches the CKA state. The copy stays on
the output's device (a CUDA output is never copied to the host here) and is float32 unless the
layer computes in float64.
"""

from __future__ import annotations

from .._core.inputs import device_of
from .._core.optional import require

__all__ = ["layer_output", "flatten", "Capture", "host_array"]


def layer_output(output, output_key: str | None = None):
    """The tensor a hook records for a layer's output.

    Parameters
    ----------
    output : torch.Tensor, tuple, list or dict
        What the layer's ``forward`` returned.
    output_key : str, optional
        For a dict output: the entry to use (default: its first tensor value).

    Returns
    -------
    torch.Tensor
        The output itself, a tuple's or list's first tensor, or the dict entry.

    Raises
    ------
    KeyError
        ``output_key`` is not in the dict output.
    TypeError
        The output holds no tensor.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.torch import layer_output
    >>> t = torch.zeros(2, 3)
    >>> layer_output((t, "aux")) is t, layer_output({"logits": t, "h": t + 1}, "h").sum().item()
    (True, 6.0)
    """
    torch = require("torch", "pyckafast.torch")

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        if output_key is not None:
            if output_key not in output:
                raise KeyError(f"output_key {output_key!r} not in the layer's dict output {list(output)}.")
            return layer_output(output[output_key])
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"a hooked layer must output a tensor, tuple/list or dict of tensors; got {type(output).__name__}.")


def _samples_first(t, sample_dim: int, name: str):
    """``t`` detached, ``sample_dim`` moved first (a view)."""
    t = t.detach()
    if not -t.dim() <= sample_dim < t.dim() or t.dim() == 0:
        raise ValueError(f"sample_dim={sample_dim} is not a dimension of the output of layer "
                         f"{name!r}, of shape {tuple(t.shape)}.")
    return t.movedim(sample_dim, 0) if sample_dim not in (0, -t.dim()) else t


def flatten(t, sample_dim: int, name: str):
    """``t`` as a contiguous (samples, features) copy on its own device: ``sample_dim`` moved
    first, the rest flattened, float32 unless ``t`` is float64; one copy, whatever the strides."""
    torch = require("torch", "pyckafast.torch")

    moved = _samples_first(t, sample_dim, name)
    dtype = moved.dtype if moved.dtype in (torch.float32, torch.float64) else torch.float32
    out = moved.new_empty(moved.shape, dtype=dtype)  # same device (and tensor subclass)
    out.copy_(moved)
    return out.reshape(moved.shape[0], -1)


def host_array(t):
    """A NumPy array of a flattened activation: a view of a CPU tensor; a device tensor is
    copied to the host (the activation cache and the RBF kernel need host rows)."""
    if device_of(t) == "cuda":
        t = t.cpu()
    return t.numpy()


class Capture:
    """Forward hooks on named submodules of one model that keep the latest output of each.

    A layer whose hook fires twice in one forward pass (a module reused inside the model) has no
    single output per sample, so it is an error naming the layer.

    ``reduce``: what to keep of each output, computed in the hook from its (samples, features)
    view (e.g. the batch Gram): no copy of the output is made, and an in-place operation after
    the layer cannot change it. Without it, a flattened copy is kept (:func:`flatten`).
    ``widths`` and ``devices`` hold each layer's number of features and device.
    """

    def __init__(self, model, names: list[str], what: str, output_keys: dict, sample_dims: dict,
                 reduce=None):
        modules = dict(model.named_modules())
        self.model, self.what, self.reduce = model, what, reduce
        self.widths: dict = {}
        self.devices: dict = {}
        self.output_keys, self.sample_dims = output_keys, sample_dims
        self.modules = {n: modules[n] for n in names}
        self.latest: dict = {}
        self.handles: list = []

    def __enter__(self) -> Capture:
        # Each module's own flag: a frozen BatchNorm in a training model, or MC dropout kept on
        # in an eval model, must come back as it was (model.train(flag) would set them all).
        self.was_training = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        for name, module in self.modules.items():
            self.handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def hook(module, args, output):
            if name in self.latest:
                raise RuntimeError(
                    f"layer {name!r} of {self.what} ran more than once in one forward pass (a "
                    "module reused inside the model): it has no single output per sample. Hook "
                    "a module that runs once per forward pass (e.g. give each use its own module).")
            t = layer_output(output, self.output_keys[name])
            if self.reduce is None:
                kept = flatten(t, self.sample_dims[name], name)
                width = kept.shape[1]
            else:
                moved = _samples_first(t, self.sample_dims[name], name)
                rows = moved.reshape(moved.shape[0], -1)
                kept, width = self.reduce(rows), rows.shape[1]
            self.latest[name], self.widths[name] = kept, int(width)
            self.devices[name] = str(t.device)
        return hook

    def take(self) -> dict:
        """The outputs recorded since the last call (name -> flattened tensor)."""
        latest, self.latest = self.latest, {}
        missing = [n for n in self.modules if n not in latest]
        if missing:
            raise RuntimeError(f"layers {missing} of {self.what} produced no output in this "
                               "forward pass.")
        return latest

    def __exit__(self, *exc) -> bool:
        for h in self.handles:
            h.remove()
        for module, training in self.was_training:
            module.training = training
        return False
