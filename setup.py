"""vmamba_zoo (the models) and ssm_kernels (the scan-kernel package), installed together."""
from setuptools import find_packages, setup

# ONNX export (tools/export_onnx.py) and its check with ONNX Runtime; tested with onnx 1.23.2,
# onnxscript 0.7.2 (torch.onnx's dynamo exporter needs it) and onnxruntime 1.32.0.
ONNX = ["onnx", "onnxscript", "onnxruntime"]

setup(
    name="vmamba_zoo",
    version="0.1.0",
    description="Visual state-space backbones (VMamba and friends) as timm models, on shared scan kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["vmamba_zoo", "vmamba_zoo.*"]) + find_packages("kernels"),
    package_dir={"ssm_kernels": "kernels/ssm_kernels"},
    package_data={"ssm_kernels": ["*.md"]},
    # tested with torch 2.14.1 + torchvision 0.29.1 (the pair the README installs)
    install_requires=["torch>=2.4", "torchvision", "timm>=1.0.15", "fvcore", "triton", "tqdm"],
    extras_require={
        "test": ["pytest", "safetensors", "matplotlib", *ONNX],  # CI runs the ONNX export tests
        # tools/benchmark.py --sweep draws its plot with matplotlib (imported only there)
        "plot": ["matplotlib"],
        "onnx": ONNX,
        # Detection and segmentation (vmamba_zoo.mm, configs/, tools/train.py): the maintained OpenMMLab
        # forks, which import as mmengine / mmcv / mmdet / mmseg. PyPI has only mmcv's source; install
        # its compiled ops first with `bash tools/build_mmcv.sh` (tools/install.sh does), which builds
        # the wheel once per machine and caches it; pip then finds onedl-mmcv already satisfied.
        "mm": ["onedl-mmengine==0.10.12", "onedl-mmcv==2.3.6", "onedl-mmdetection==3.5.1",
               "onedl-mmsegmentation==1.4.2", "pycocotools", "ftfy", "regex"],
    },
)
