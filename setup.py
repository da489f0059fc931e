"""Packaging beyond what setup.cfg can say: the Hydra configs live in the repository's top-level
``configs/`` (one copy, beside the code that reads them) and install as package data at
``detector/configs``, where ``detector.CONFIG_DIR`` finds them in an installed package. Each config
group folder (``data/``, ``model/temporal/``, ...) is named as a (data-only) package so that setuptools
carries its yaml files. The C++ source of the CPU sparse-convolution kernels ships too (``detector/ops/
csrc``, a data-only package likewise): an installed package names its build by the source's hash and
builds it with ``python -m detector.ops.cpu_kernels``.
Everything else (metadata, dependencies, extras) is in setup.cfg."""

from setuptools import find_namespace_packages, find_packages, setup

CONFIG_PACKAGES = ["detector.configs", *(f"detector.configs.{p}" for p in find_namespace_packages("configs"))]

setup(
    packages=[*find_packages(include=["detector", "detector.*", "data_tools", "data_tools.*"]), *CONFIG_PACKAGES,
              "detector.ops.csrc"],
    package_dir={"detector.configs": "configs"},
    package_data={"detector.ops.csrc": ["*.cpp"], **{p: ["*.yaml"] for p in CONFIG_PACKAGES}},
)
