"""Package definition for vaeclust: unsupervised image clustering in TensorFlow/Keras."""
import setuptools

setuptools.setup(
    name="vaeclust",
    version="0.1.0",
    description="Unsupervised image clustering: Variational Clustering and C3-GAN in TensorFlow/Keras.",
    packages=setuptools.find_packages(include=["vaeclust", "vaeclust.*", "c3gan", "c3gan.*", "export", "export.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorflow-probability>=0.25,<0.26",
        # Not imported by vaeclust: TensorFlow Probability imports tf_keras whenever Keras 3 is
        # installed (tensorflow_probability/python/internal/tf_keras.py).
        "tf-keras>=2.21,<2.22",
        "tensorflow-datasets==4.9.10",
        "tensorboard",
        "matplotlib",
        "absl-py",
        "numpy",
        "scipy",
        "scikit-learn",
        "threadpoolctl",  # a scikit-learn dependency, imported by vaeclust.prior_init
        "mlxtend",
        "pillow",
        "tensorflow-serving-api==2.21.*",
        "grpcio",
        # configs/folder.flags fits the prior's initial mixture on a UMAP embedding of the codes
        "umap-learn",
    ],
    extras_require={"test": ["pytest", "pytest-xdist", "cryptography"]},
)
