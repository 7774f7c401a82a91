"""core.precision: the int8 file and the report that lets the engine run it by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from core.engine import OnnxEngine, choose_engine
from core.onnx_export import float32_onnx
from core.precision import accepted_int8, float_nodes, int8_path, quantize_int8, verdict, write_report

VNNI = frozenset({"avx512_vnni"})


def test_float_nodes_are_the_pixel_scaling_and_the_head():
    ops = ["Cast", "Mul", "Transpose", "Conv", "Relu", "Conv", "Add", "GlobalAveragePool", "MatMul", "Add"]
    nodes = [helper.make_node(op, ["x"], ["y"], name=f"{i}-{op}") for i, op in enumerate(ops)]
    graph = helper.make_graph(nodes, "g", [], [])
    assert float_nodes(helper.make_model(graph)) == ["0-Cast", "1-Mul", "2-Transpose", "8-MatMul", "9-Add"]


def _scores(mae: float, coverage: float, predicted: list[int]) -> dict:
    return {"mae": mae, "coverage": coverage, "predicted": np.asarray(predicted)}


@pytest.mark.parametrize(
    ("mae", "coverage", "accepted"),
    [(5.04, 0.905, True), (4.90, 0.895, True), (5.06, 0.90, False), (5.0, 0.889, False), (5.0, 0.911, False)],
)
def test_verdict_holds_a_precision_to_both_tolerances(mae, coverage, accepted):
    row = verdict(_scores(mae, coverage, [1, 2, 6, 5]), _scores(5.0, 0.90, [1, 2, 3, 4]))
    assert row["accepted"] is accepted
    assert (row["moved"], row["moved_over_a_year"]) == (0.5, 0.25)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.service.conftest import build_tiny_model_file

    return build_tiny_model_file(tmp_path_factory.mktemp("precision") / "tiny.h5", seed=4)


def test_int8_file_runs_close_to_float32_and_only_an_accepting_report_makes_it_the_default(tiny_model, tmp_path):
    rng = np.random.default_rng(1)
    calibration = rng.integers(0, 256, (32, 64, 64, 3), dtype=np.uint8)
    float_file = float32_onnx(tiny_model, tmp_path)
    quantize_int8(float_file, int8_path(tiny_model), calibration)
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(int8_path(tiny_model))).graph.node)
    chips = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    reference = OnnxEngine(float_file).logits(chips)
    quantized = OnnxEngine(int8_path(tiny_model), "int8").logits(chips)
    assert np.abs(quantized - reference).max() < 0.05 * np.abs(reference).max()

    assert accepted_int8(tiny_model) is None
    write_report(tiny_model, {"precisions": {"int8": {"accepted": False}}})
    assert choose_engine(tiny_model, flags=VNNI, gpu=False).precision == "float32"
    write_report(tiny_model, {"precisions": {"int8": {"accepted": True}}})
    assert accepted_int8(tiny_model) == int8_path(tiny_model)
    assert choose_engine(tiny_model, flags=VNNI, gpu=False).precision == "int8"
