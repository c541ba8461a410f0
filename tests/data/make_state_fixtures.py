"""Writes the state fixture files of tests/test_state_files.py with the code of the time (run
once, at commit 81092e0, before the one moment state: the files pin the two file formats)."""
import json
import os

import numpy as np

import pyckafast

HERE = os.path.dirname(os.path.abspath(__file__))


def _data():
    rng = np.random.default_rng(2024)
    x = rng.normal(size=(300, 5)) * 3 + 7
    y = np.tanh(x[:, :3]) + 0.2 * rng.normal(size=(300, 3))
    z = (x[:, :2] ** 2).astype(np.float32)
    return x, y, z


if __name__ == "__main__":
    x, y, z = _data()
    want = {}
    for debiased in (True, False):
        tag = "debiased" if debiased else "biased"
        s = pyckafast.LinearCKAState(debiased=debiased).update(x[:120], y[:120]).update(x[120:], y[120:])
        s.save(os.path.join(HERE, f"linear_state_{tag}_v2.npz"))
        want[f"linear_state_{tag}_v2"] = {"n": s.n, "biased": s.result(), **(
            {"debiased": s.result(debiased=True)} if debiased else {})}
        m = pyckafast.CKAMapState(debiased=debiased).update({"a": x[:100], "b": y[:100], "c": z[:100]})
        m.update({"a": x[100:], "b": y[100:], "c": z[100:]})
        m.save(os.path.join(HERE, f"map_state_sym_{tag}_v1.npz"))
        want[f"map_state_sym_{tag}_v1"] = {"n": m.n, "biased": m.result().tolist(), **(
            {"debiased": m.result(debiased=True).tolist()} if debiased else {})}
        c = pyckafast.CKAMapState(debiased=debiased).update([x[:150], z[:150]], [y[:150]])
        c.update([x[150:], z[150:]], [y[150:]])
        c.save(os.path.join(HERE, f"map_state_cross_{tag}_v1.npz"))
        want[f"map_state_cross_{tag}_v1"] = {"n": c.n, "biased": c.result().tolist(), **(
            {"debiased": c.result(debiased=True).tolist()} if debiased else {})}
    # a format-1 LinearCKAState file (no scales): the v2 file without scale_x/scale_y
    with np.load(os.path.join(HERE, "linear_state_debiased_v2.npz")) as f:
        arrays = {k: f[k] for k in f.files if k not in ("scale_x", "scale_y")}
    arrays["format_version"] = np.array(1)
    with open(os.path.join(HERE, "linear_state_debiased_v1.npz"), "wb") as f:
        np.savez(f, **arrays)
    want["linear_state_debiased_v1"] = want["linear_state_debiased_v2"]
    with open(os.path.join(HERE, "state_fixtures.json"), "w") as f:
        json.dump(want, f, indent=1)
