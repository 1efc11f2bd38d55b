"""Once-for-All: one elastic MobileNetV3 supernet, trained once, specialized per device."""

__version__ = "0.1.0"
