import pytest

from models.devices import choose_backend, choose_device, cpu_threads


def test_choose_device():
    assert choose_device("auto", cuda_ok=True) == "cuda"
    assert choose_device("auto", cuda_ok=False) == "cpu"
    assert choose_device("cpu", cuda_ok=True) == "cpu"
    assert choose_device("cuda", cuda_ok=True) == "cuda"
    with pytest.raises(RuntimeError, match="CUDA"):
        choose_device("cuda", cuda_ok=False)
    with pytest.raises(ValueError):
        choose_device("tpu", cuda_ok=False)


def test_choose_backend_prefers_onnx_on_cpu_and_torch_on_cuda():
    assert choose_backend("auto", "cpu", has_onnx=True, has_torch=True) == "onnx"
    assert choose_backend("auto", "cpu", has_onnx=False, has_torch=True) == "torch"
    assert choose_backend("auto", "cuda", has_onnx=True, has_torch=True) == "torch"
    assert choose_backend("torch", "cpu", has_onnx=True, has_torch=True) == "torch"


def test_choose_backend_names_what_is_missing():
    with pytest.raises(FileNotFoundError, match="int8"):
        choose_backend("onnx", "cpu", has_onnx=False, has_torch=True)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        choose_backend("auto", "cpu", has_onnx=False, has_torch=False)
    with pytest.raises(ValueError, match="CPU only"):
        choose_backend("onnx", "cuda", has_onnx=True, has_torch=True)
    with pytest.raises(ValueError):
        choose_backend("tensorrt", "cpu", has_onnx=True, has_torch=True)


def test_cpu_threads():
    assert cpu_threads(3) == 3
    assert cpu_threads(None) >= 1
    with pytest.raises(ValueError):
        cpu_threads(0)
