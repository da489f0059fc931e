"""Packaging beyond what setup.cfg can say: the Hydra configs live in the repository's top-level
``configs/`` (one copy, beside the code that reads them) and install as package data at
``detector/configs``, where ``detector.CONFIG_DIR`` finds them in an installed package. Each config
group folder (``data/``, ``model/temporal/``, ...) is named as a (data-only) package so that setuptools
carries its yaml files. Everything else (metadata, dependencies, extras) is in setup.cfg."""

from setuptools import find_namespace_packages, find_packages, setup

CONFIG_PACKAGES = ["detector.configs", *(f"detector.configs.{p}" for p in find_namespace_packages("configs"))]

setup(
    packages=[*find_packages(include=["detector", "detector.*", "data_tools", "data_tools.*"]), *CONFIG_PACKAGES],
    package_dir={"detector.configs": "configs"},
    package_data={p: ["*.yaml"] for p in CONFIG_PACKAGES},
)
