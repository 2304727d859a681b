"""latentarc codec: tiny-autoencoder latents, adaptive quantization, integer entropy coding."""
