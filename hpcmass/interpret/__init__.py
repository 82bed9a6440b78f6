"""The interpret stage: DeepDream-style input gradients of the mass CNN, radial ΔN/N profiles."""
