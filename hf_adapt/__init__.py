"""hf_adapt: adapt pretrained BERT-style encoders to text classification."""

__version__ = "0.1.0"
