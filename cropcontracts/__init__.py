"""The bottom layer of jaxcrop: the formats between stages and the plumbing they share.

Every stage (`prep`, `tfds_builder`, `jaxcrop`) may import this package; it
imports none of them. It holds the user-error base and the one CLI error
handler (`errors`), the argument parser of every command line (`cli`), the only tmp+rename writer (`atomic`), the zone grid
(`zone`), the zone folder (`zonefolder`, contract 1), the versioned crop
nomenclature (`nomenclature`, `data/`), the normalization moments (`moments`)
and the dataset metadata a checkpoint carries (`dataset_meta`, contract 3).
"""
