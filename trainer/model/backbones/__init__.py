"""Backbones with pretrained weights that need code of their own to read (dlib's face-recognition ResNet)."""
