"""beam-caption: caption huge image collections with vision-language models on Apache Beam."""

__version__ = "0.1.0"
