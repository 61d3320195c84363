"""A toy world where Perfusion concepts can be seen and measured on a CPU.

Scenes of coloured blocks on flat backgrounds with exact captions (:mod:`toyworld.world`), pixel
scorers that read every attribute back (:mod:`toyworld.scorer`), an exact TAESD-layout autoencoder
(:mod:`toyworld.vae`) and a tiny SD1.5-layout UNet trained on the world (:mod:`toyworld.build`).
A mechanism test bed: its numbers say whether the pack's machinery does what the method claims,
never how real SD1.5 behaves.
"""
