"""The artifact tier: a saved Hugging Face transformers model run in-process with PyTorch
(the optional ``torch`` extra). Only ``files`` and ``extra`` load without torch installed."""
