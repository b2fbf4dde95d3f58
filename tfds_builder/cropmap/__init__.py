"""The `cropmap` TFDS dataset: zone folders -> patches with spatial splits.

Build with `tfds build tfds_builder/cropmap` (see cropmap_dataset_builder.py).
Nothing is imported here: `tfds build` imports this package as `cropmap`.
"""
