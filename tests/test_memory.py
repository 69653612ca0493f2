"""The memory guard refuses requests that cannot fit, before allocating anything."""

import numpy as np
import pytest

from animegen_utils import generate
from animegen_utils.memory import HEADROOM, MemoryEstimateError, available_bytes, estimate_memory, estimate_peak_bytes


def test_estimate_grows_with_pixels_and_batch(dummy_pipe):
    small = estimate_peak_bytes(dummy_pipe, 1, 64, 64)
    assert estimate_peak_bytes(dummy_pipe, 1, 128, 128) > 3 * small
    assert estimate_peak_bytes(dummy_pipe, 4, 64, 64) > 3 * small
    # Without classifier-free guidance the UNet runs half the rows.
    assert estimate_memory(dummy_pipe, 2, 64, 64, guidance=1.0).unet_bytes < \
        estimate_memory(dummy_pipe, 2, 64, 64, guidance=7.5).unet_bytes


def test_vae_slicing_and_tiling_lower_the_decode_estimate(dummy_pipe):
    before = estimate_memory(dummy_pipe, 4, 1024, 1024).vae_bytes
    dummy_pipe.vae.enable_slicing()
    try:
        assert estimate_memory(dummy_pipe, 4, 1024, 1024).vae_bytes == before // 4
    finally:
        dummy_pipe.vae.disable_slicing()
    dummy_pipe.vae.enable_tiling()
    try:
        assert estimate_memory(dummy_pipe, 4, 1024, 1024).vae_bytes < before
    finally:
        dummy_pipe.vae.disable_tiling()


def test_materialised_attention_is_counted_and_slicing_divides_it(dummy_pipe):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    fused = estimate_memory(dummy_pipe, 1, 1024, 1024).unet_bytes
    dummy_pipe.unet.set_attn_processor(AttnProcessor())
    try:
        full = estimate_memory(dummy_pipe, 1, 1024, 1024).unet_bytes
        assert full > 10 * fused
        dummy_pipe.enable_attention_slicing(1)
        assert estimate_memory(dummy_pipe, 1, 1024, 1024).unet_bytes < full
    finally:  # the UNet is shared by every pipeline of this model: put the fused kernel back
        dummy_pipe.unet.set_attn_processor(AttnProcessor2_0())


def test_estimate_is_an_upper_bound_of_a_measured_run(dummy_pipe):
    # tracemalloc does not see torch's allocations; RSS growth does.
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    generate(dummy_pipe, "1girl", seed=0, steps=1, height=384, width=384, progress=False)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert grown <= estimate_peak_bytes(dummy_pipe, 1, 384, 384) * 1.5


def test_a_request_larger_than_any_machine_is_refused_with_remedies(dummy_pipe):
    huge = 16384  # ~200 GB to decode; refused without allocating it
    assert estimate_peak_bytes(dummy_pipe, 3, huge, huge) > available_bytes("cpu")
    with pytest.raises(MemoryEstimateError) as info:
        generate(dummy_pipe, "1girl", seed=[0, 1, 2], height=huge, width=huge, steps=1, progress=False)
    message = str(info.value)
    for words in ("3 image(s) at 16384x16384", "GiB", "free", "a smaller size", "enable_vae_tiling",
                  "check_memory=False", "ANIMEGEN_MEMORY_CHECK=0"):
        assert words in message


def test_the_remedy_names_a_batch_size_that_fits(dummy_pipe):
    free = available_bytes("cpu")
    per_image = estimate_peak_bytes(dummy_pipe, 1, 2048, 2048)
    batch = int(free // per_image) + 2  # one image fits, the batch does not
    if per_image > HEADROOM * free:
        pytest.fail(f"this machine has too little free memory ({free} bytes) for the test's premise")
    with pytest.raises(MemoryEstimateError, match=r"batch_size=\d+ fits"):
        generate(dummy_pipe, "1girl", seed=[0] * batch, height=2048, width=2048, steps=1,
                 batch_size=batch, progress=False)


def test_the_guard_can_be_switched_off(dummy_pipe, monkeypatch):
    monkeypatch.setenv("ANIMEGEN_MEMORY_CHECK", "0")
    from animegen_utils.memory import check_memory

    estimate = check_memory(dummy_pipe, 3, 16384, 16384)  # returns instead of raising
    assert estimate.peak_bytes > 0
    [g] = generate(dummy_pipe, "1girl", seed=0, steps=1, check_memory=False, progress=False)
    assert np.asarray(g.image).shape == (64, 64, 3)
