"""Deployment: inference (engine glue, writer, one-image API), encoder export and embedding, the zoo package.

Modules (import names from them; the package itself exports nothing):

- ``embed``: Embed and score images with an exported encoder: ``python -m bundle score DATALIST --encoder
  models/encoder.ts``.
- ``engine``: Inference engine glue: collation, ``prepare_batch``, the inferer that also returns the latent, per-image
  metrics.
- ``export``: Export the frozen encoder on its own: TorchScript with embedded metadata, and ONNX (SPEC 3).
- ``image_encoder``: The whole chain from a raw grey image to the latent in one TorchScript module
  (``models/image_encoder.ts``).
- ``inference``: Streaming inference: per image the reconstruction in the original geometry, the latent, metrics and
  scores.
- ``package``: The bundle as the model zoo takes it: ``python -m bundle package [--format zip|hf]``.
- ``writer``: The inference writer: reconstructions in native geometry, latents and the results table, all atomic.
"""
