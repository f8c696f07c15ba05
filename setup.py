import re
from pathlib import Path

from setuptools import find_packages, setup

# The one version string lives in roformer_sim_ft/__init__.py; read, not imported (importing needs TensorFlow).
VERSION = re.search(r'^__version__ = "([^"]+)"$', Path(__file__).with_name("roformer_sim_ft").joinpath(
    "__init__.py").read_text(encoding="utf-8"), re.M).group(1)

setup(
    name="roformer-sim-ft",
    version=VERSION,
    description="RoFormer-Sim-FT (Su Jianlin, 2021) on bert4keras and today's TensorFlow: "
    "load, fine-tune, distill, export and evaluate RoFormer-Sim checkpoints.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["roformer_sim_ft", "roformer_sim_ft.*"]),
    # The bundled sample data is package data of roformer_sim_ft.data, not packages of its own; with
    # include_package_data, setuptools would take its folders for undeclared packages and warn per folder.
    include_package_data=False,
    package_data={"roformer_sim_ft.data": ["sample_data/**/*"]},
    # bert4keras==0.11.5 is required too but must be installed with --no-deps
    # (its keras<=2.3.1 pin is obsolete): see the Makefile's install step.
    install_requires=[line for line in open("requirements.txt").read().splitlines() if line and not line.startswith("#")],
    # In-graph tokenisation for the SavedModel's string signatures (export --format savedmodel).
    extras_require={"serving": ["tensorflow-text==2.21.*"]},
    entry_points={"console_scripts": ["roformer-sim-ft=roformer_sim_ft.cli:main"]},
)
