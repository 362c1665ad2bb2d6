import torch

from alexnet_tui.model import AlexNet, smallest_image_size, summary_text

TUTORIAL_TABLE_TAIL = """\
================================================================
Total params: 62,378,344
Trainable params: 62,378,344
Non-trainable params: 0
----------------------------------------------------------------
Input size (MB): 0.59
Forward/backward pass size (MB): 11.09
Params size (MB): 237.95
Estimated Total Size (MB): 249.63
----------------------------------------------------------------
"""


def test_summary_matches_the_tutorial_at_1000_classes():
    text = summary_text(AlexNet(1000))
    assert text.endswith(TUTORIAL_TABLE_TAIL)
    assert "            Conv2d-1           [-1, 96, 55, 55]          34,944" in text
    assert "          Linear-20                 [-1, 1000]       4,097,000" in text
    assert "Adaptive" not in text  # at 227 nothing is added to the tutorial's network


def test_summary_leaves_the_model_as_it_was():
    model = AlexNet(2)
    model.train()
    summary_text(model)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    summary_text(model)
    assert not model.training


def test_classes_come_from_the_argument():
    assert AlexNet(2).classifier[-1].out_features == 2


def test_channels_last_input_works():
    model = AlexNet(2).to(memory_format=torch.channels_last).eval()
    images = torch.randn(2, 3, 227, 227).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert model(images).shape == (2, 2)


def test_other_image_sizes_pool_to_the_same_classifier():
    for size in (smallest_image_size(), 96, 160, 512):
        with torch.no_grad():
            assert AlexNet(3, size).eval()(torch.zeros(1, 3, size, size)).shape == (1, 3)
    assert smallest_image_size() == 67
