"""Convert a GGUF model to a Hugging Face safetensors folder (for vLLM, which does not load GGUF).

    python tests/gguf_to_hf.py MODEL.gguf OUT_DIR [generation_config.json text]

Run with a Python that has ``transformers``, ``torch`` and ``gguf`` (the vLLM venv). It writes
into ``OUT_DIR.tmp`` and renames at the end, so a half-written folder is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def main() -> None:
    gguf = Path(sys.argv[1])
    out = Path(sys.argv[2])
    gen_config = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # bfloat16: what vLLM runs on CPU anyway; half the size of float32 on disk.
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # The weights are dequantized on load; drop the GGUF "quantization" marker so it can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    if gen_config:
        path = tmp / "generation_config.json"
        base = json.loads(path.read_text()) if path.exists() else {}
        base.update(gen_config)
        path.write_text(json.dumps(base, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


if __name__ == "__main__":
    main()
