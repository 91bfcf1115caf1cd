"""ldm.v1: ImageSynthesisService messages and stubs."""
