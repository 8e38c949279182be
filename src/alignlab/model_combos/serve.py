"""Serve chat models over the OpenAI chat API, from the command line.

    python -m alignlab.model_combos.serve frontier=tiny:FOLDER weak=hf:FOLDER --port 8000
    python -m alignlab.model_combos.serve --zoo            # the quick zoo's d128L4 + d48L2

Each `NAME=BACKEND:FOLDER` is served as model NAME by `alignlab.llm.serve` (a stdlib
`ThreadingHTTPServer` with `/v1/models` and `/v1/chat/completions`); BACKEND is `tiny` (a
model of the miniature's zoo, `zoo.TinyChat`) or `hf` (any local Hugging Face causal LM,
`alignlab.llm.HFLocal`). `--zoo` serves the quick preset's frontier and weak models of
`model_combos.mini` (seed 0) as `frontier` and `weak`, training nothing: run
`alignlab run model_combos.mini` first. Then point `ALIGNLAB_FRONTIER_*` / `ALIGNLAB_WEAK_*` at
it, as at any vLLM or Ollama server (docs/model_combos.md).
"""

from __future__ import annotations

import argparse
import sys
import time

from alignlab.core.cache import is_complete
from alignlab.core.errors import AlignlabError
from alignlab.model_combos.backends import chat_model

LOCAL_BACKENDS = ("tiny", "hf")


def parse_model(arg: str) -> tuple[str, str, str]:
    """'NAME=BACKEND:FOLDER' -> (name, backend, folder)."""
    name, _, rest = arg.partition("=")
    backend, _, folder = rest.partition(":")
    if not name or not folder or backend not in LOCAL_BACKENDS:
        raise AlignlabError(
            f"{arg!r} is not NAME=BACKEND:FOLDER with BACKEND one of {', '.join(LOCAL_BACKENDS)}"
        )
    return name, backend, folder


def zoo_models(seed: int = 0) -> list[tuple[str, str, str]]:
    """The quick zoo's frontier and weak model of `model_combos.mini`, from the cache."""
    from alignlab.model_combos.experiments.mini import MiniConfig
    from alignlab.model_combos.zoo import model_dir

    cfg = MiniConfig()
    out = []
    for name, role, size in (("frontier", "frontier", cfg.frontier), ("weak", "weak", cfg.weak)):
        folder = model_dir(cfg.zoo, role, size, seed)
        if not is_complete(folder):
            raise AlignlabError(
                f"the quick zoo's {role} {size} is not in the cache ({folder}); run "
                f"`alignlab run model_combos.mini` first"
            )
        out.append((name, "tiny", str(folder)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alignlab.model_combos.serve", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("models", nargs="*", help="NAME=BACKEND:FOLDER (BACKEND: tiny or hf)")
    parser.add_argument("--zoo", action="store_true", help="serve the quick zoo (seed 0)")
    parser.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key-env", default=None, help="require the key in this variable")
    args = parser.parse_args(argv)
    import os

    from alignlab.llm import serve

    try:
        specs = [parse_model(a) for a in args.models] + (zoo_models() if args.zoo else [])
        if not specs:
            raise AlignlabError("name at least one model (NAME=BACKEND:FOLDER) or pass --zoo")
        key = os.environ.get(args.api_key_env) if args.api_key_env else None
        if args.api_key_env and not key:
            raise AlignlabError(f"--api-key-env {args.api_key_env}: that variable is not set")
        models = {n: chat_model(b, path=f, name=n) for n, b, f in specs}
        server = serve(models, host=args.host, port=args.port, api_key=key)
    except AlignlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"serving {', '.join(models)} at {server.url} (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
