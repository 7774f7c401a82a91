"""The architectures ``build_model`` knows, as plain data (no Keras import), for the config's rules too."""

# arch_type -> its arch_subtypes (depths; face_resnet 29 is dlib's face-recognition network).
ARCHITECTURES: dict[str, tuple[int, ...]] = {"resnet": (18, 34, 50, 101, 152), "vgg": (16, 19), "face_resnet": (29,)}
# keras.applications backbones with ImageNet weights.
IMAGENET_BACKBONES = {("resnet", 50), ("resnet", 101), ("resnet", 152), ("vgg", 16), ("vgg", 19)}
# Below this, face_resnet's four unpadded stride-2 convolutions run out of pixels; dlib's weights were learnt at 150.
MIN_FACE_RESNET_SIZE = 103
