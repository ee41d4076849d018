"""A teacher's identity names the runtime that scores it: int8 ONNX on CPU and torch (fp32 CPU, bf16/fp16 CUDA)
logits of one artifact are different teachers, filed and reused apart. No GPU needed: the machine's CUDA and
bf16 support are passed in."""

import pytest

from models.artifact import ENCODER_CONFIG_FILE, FP16_WEIGHTS_FILE, ONNX_INT8_FILE, WEIGHTS_FILE, ArtifactInfo, write_info
from training.distill import soft_label_fingerprint, teacher_identity, teacher_runtime
from training.reproducibility import file_sha256


@pytest.fixture
def teacher_folder(tmp_path):
    folder = tmp_path / "teacher"
    write_info(folder, ArtifactInfo(version="tiny-teacher", base_encoder="mpnet", max_length=64))
    (folder / ENCODER_CONFIG_FILE).write_text("{}")
    (folder / WEIGHTS_FILE).write_bytes(b"fp32 weights")
    (folder / ONNX_INT8_FILE).write_bytes(b"int8 export")
    return folder


def test_onnx_and_torch_scoring_of_one_teacher_are_different_teachers(teacher_folder):
    onnx = teacher_runtime(teacher_folder, device="cpu", backend="onnx")
    torch_cpu = teacher_runtime(teacher_folder, device="cpu", backend="torch")
    assert (onnx.backend, onnx.device, onnx.precision, onnx.weights.name) == ("onnx", "cpu", "int8", ONNX_INT8_FILE)
    assert (torch_cpu.backend, torch_cpu.precision, torch_cpu.weights.name) == ("torch", "fp32", WEIGHTS_FILE)
    a, b = teacher_identity(teacher_folder, onnx), teacher_identity(teacher_folder, torch_cpu)
    assert a != b and a.endswith("+onnx-cpu-int8") and b.endswith("+torch-cpu-fp32")
    assert file_sha256(teacher_folder / ONNX_INT8_FILE) in a and file_sha256(teacher_folder / WEIGHTS_FILE) in b
    assert soft_label_fingerprint(a, ["x"], None) != soft_label_fingerprint(b, ["x"], None)


def test_auto_follows_the_machine_like_load_engine(teacher_folder):
    cpu = teacher_runtime(teacher_folder, cuda_ok=False)
    gpu_bf16 = teacher_runtime(teacher_folder, cuda_ok=True, bf16_ok=True)
    gpu_fp16 = teacher_runtime(teacher_folder, cuda_ok=True, bf16_ok=False)
    assert [r.tag for r in (cpu, gpu_bf16, gpu_fp16)] == ["onnx-cpu-int8", "torch-cuda-bf16", "torch-cuda-fp16"]
    identities = {teacher_identity(teacher_folder, r) for r in (cpu, gpu_bf16, gpu_fp16)}
    assert len(identities) == 3  # a GPU machine no longer files torch logits under the int8 export's hash
    assert gpu_bf16.weights.name == WEIGHTS_FILE


def test_an_onnx_only_teacher_scores_on_cpu_and_an_fp16_copy_is_the_torch_weights(teacher_folder):
    (teacher_folder / WEIGHTS_FILE).unlink()
    assert teacher_runtime(teacher_folder, cuda_ok=True).tag == "onnx-cpu-int8"  # load_engine's CPU fallback
    (teacher_folder / FP16_WEIGHTS_FILE).write_bytes(b"fp16 copy")
    runtime = teacher_runtime(teacher_folder, cuda_ok=True, bf16_ok=True)
    assert runtime.tag == "torch-cuda-bf16" and runtime.weights.name == FP16_WEIGHTS_FILE
    assert file_sha256(teacher_folder / FP16_WEIGHTS_FILE) in teacher_identity(teacher_folder, runtime)
