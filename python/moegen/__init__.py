"""moegen: compiled Mixture-of-Experts routing kernels for PyTorch and NumPy.

    import moegen
    router = moegen.Router("templates/deepseek-v3.yaml")      # or backend="cuda"
    ids, weights, *_ = router.route(logits, bias=bias)
    replayed = router.replay(new_logits, forced_ids=ids)

`moegen.ops` registers the torch custom op (torch.compile, CUDA graphs);
`moegen.hf` patches Hugging Face transformers MoE models and captures or
replays their routing. Without the compiler (the runtime-only package of
python/runtime-only/), Router.load(DIRECTORY) runs kernels compiled ahead.
docs/python.md has the whole story.
"""

from ._moegen import has_compiler, has_cuda, version as __version__
from ._router import Dispatch, Error, InputError, Router, Routing, spec_to_yaml

__all__ = ["Router", "Routing", "Dispatch", "InputError", "Error",
           "spec_to_yaml", "has_compiler", "has_cuda", "__version__"]
