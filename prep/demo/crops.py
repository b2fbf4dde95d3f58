"""The demo's crops: RPG codes, regional mixes, phenologies and their cover table.

Each crop follows a phenology: cover fractions of green vegetation, dry matter
and flowers over the day of year, piecewise linear between knots; the rest of a
pixel is bare soil. Each parcel shifts its crop's phenology in time (sowing date)
and scales its green peak (`prep.demo.parcels` draws those per parcel). Similar
crops (wheat, barley, durum; the grasslands) are kept confusable on purpose.
"""
from __future__ import annotations

import numpy as np

# CODE_CULTU -> (CODE_GROUP, phenology), from the RPG list in force since 2023
# (JAC, MCS, CAH exist only from 2023; CPL and PPH carry their 2023 meaning).
CODES = {
    "BTH": ("1", "winter_wheat"),       # blé tendre d'hiver
    "BDH": ("4", "durum_wheat"),        # blé dur d'hiver
    "ORH": ("3", "winter_barley"),      # orge d'hiver
    "ORP": ("3", "spring_barley"),      # orge de printemps
    "MIS": ("2", "maize"),              # maïs (grain and silage since 2023)
    "MID": ("2", "sweet_maize"),        # maïs doux
    "CZH": ("5", "rapeseed"),           # colza d'hiver
    "TRN": ("6", "sunflower"),          # tournesol
    "SOJ": ("7", "soybean"),            # soja
    "BTN": ("24", "sugar_beet"),        # betterave non fourragère
    "PTC": ("25", "potato"),            # pomme de terre de consommation
    "PPR": ("8", "peas"),               # pois de printemps
    "PPH": ("18", "grazed_grass"),      # prairie permanente
    "PTR": ("19", "mown_grass"),        # prairie temporaire
    "LUZ": ("16", "alfalfa"),           # autre luzerne
    "JAC": ("11", "fallow"),            # jachère (terre arable), new in 2023
    "MCS": ("4", "spring_barley"),      # mélange de céréales de printemps, new in 2023
    "CAH": ("4", "winter_barley"),      # autre céréale secondaire d'hiver, new in 2023
    "CPL": ("16", "winter_barley"),     # mélange multi-espèces (2023 meaning)
    "VRC": ("21", "vineyard"),          # vigne : raisins de cuve
    "VRG": ("20", "orchard"),           # verger
    "BOR": ("28", "border"),            # bordure de champ
    "SNE": ("28", "fallow"),            # surface temporairement non exploitée
    # Codes of the list before 2023, in the RPG of the demo's earlier years
    # (`prep.demo.seasons.BEFORE_2023`).
    "MIE": ("2", "silage_maize"),       # maïs ensilage (up to 2022)
    "J5M": ("11", "fallow"),            # jachère de 5 ans ou moins (up to 2022)
    "MCR": ("4", "winter_barley"),      # mélange de céréales (up to 2022)
}
# Grassland is managed by the farm, not by its RPG code: most temporary grassland
# is mown three times, most permanent grassland grazed with one cut, not all.
# Maize: RPG 2023 declares grain and silage maize alike as MIS.
MANAGEMENT = {"PTR": (("mown_grass", 0.7), ("grazed_grass", 0.3)),
              "PPH": (("mown_grass", 0.3), ("grazed_grass", 0.7)),
              "MIS": (("maize", 0.75), ("silage_maize", 0.25))}
CATCH_CROPS = ("MOT", "PCL")            # moutarde, phacélie (CULTURE_D1/D2)
# Crops after which a catch crop is sown in late summer.
CATCH_AFTER = ("BTH", "BDH", "ORH", "ORP", "CZH", "PPR")

# Share of the parcels per code in each region (the south is warmer: more
# maize, sunflower, durum, vines; the north more beet, potato, peas).
MIX = {
    "demo-north": dict(BTH=.30, ORH=.10, BDH=.02, ORP=.04, MIS=.09,
                       CZH=.10, TRN=.02, BTN=.07, PTC=.04, PPR=.04, PPH=.06,
                       PTR=.04, LUZ=.03, JAC=.03, BOR=.01, SNE=.01, MCS=.02,
                       CAH=.02, CPL=.01),
    "demo-south": dict(BTH=.18, ORH=.06, BDH=.07, ORP=.02, MIS=.16,
                       MID=.01, CZH=.06, TRN=.10, SOJ=.04, BTN=.01, PTC=.01,
                       PPR=.02, PPH=.08, PTR=.05, LUZ=.03, JAC=.03, VRC=.04,
                       VRG=.02, BOR=.01, SNE=.01, MCS=.01, CAH=.02, CPL=.01),
}
REGION_SHIFT_DAYS = {"demo-north": 0.0, "demo-south": -7.0}

# Phenology knots: (day of year, green, dry, flowers) cover fractions; the rest
# of the pixel is bare soil. Piecewise linear in between.
PHENOLOGY = {
    "winter_wheat": [(1, .25, 0, 0), (60, .30, 0, 0), (85, .50, 0, 0),
                     (115, .82, 0, 0), (145, .90, 0, 0), (165, .70, .20, 0),
                     (182, .20, .70, 0), (196, .05, .85, 0), (201, .02, .55, 0),
                     (240, .04, .30, 0), (258, .01, .05, 0), (295, 0, 0, 0),
                     (330, .10, 0, 0), (366, .18, 0, 0)],
    "durum_wheat": [(1, .22, 0, 0), (60, .28, 0, 0), (85, .48, 0, 0),
                    (112, .78, 0, 0), (140, .84, 0, 0), (158, .62, .28, 0),
                    (176, .15, .75, 0), (190, .04, .85, 0), (195, .02, .55, 0),
                    (240, .04, .30, 0), (258, .01, .05, 0), (295, 0, 0, 0),
                    (330, .10, 0, 0), (366, .16, 0, 0)],
    "winter_barley": [(1, .30, 0, 0), (55, .35, 0, 0), (78, .55, 0, 0),
                      (105, .85, 0, 0), (132, .88, 0, 0), (150, .60, .30, 0),
                      (168, .15, .75, 0), (182, .04, .85, 0), (187, .02, .55, 0),
                      (235, .04, .30, 0), (255, .01, .05, 0), (285, 0, 0, 0),
                      (320, .12, 0, 0), (366, .22, 0, 0)],
    "spring_barley": [(1, .04, .05, 0), (75, .02, 0, 0), (95, .06, 0, 0),
                      (122, .50, 0, 0), (150, .86, 0, 0), (170, .60, .30, 0),
                      (190, .10, .80, 0), (205, .02, .50, 0), (250, .05, .20, 0),
                      (270, 0, 0, 0), (366, .05, 0, 0)],
    "maize": [(1, .04, .15, 0), (100, .02, .05, 0), (125, 0, 0, 0),
              (150, .08, 0, 0), (175, .45, 0, 0), (200, .88, 0, 0),
              (235, .86, .04, 0), (255, .50, .40, 0), (275, .20, .70, 0),
              (286, .02, .45, 0), (330, .04, .20, 0), (366, .04, .10, 0)],
    "silage_maize": [(1, .04, .10, 0), (100, .02, .05, 0), (125, 0, 0, 0),
                     (150, .08, 0, 0), (175, .45, 0, 0), (200, .88, 0, 0),
                     (232, .84, .06, 0), (248, .60, .30, 0), (252, .02, .15, 0),
                     (300, .03, .05, 0), (366, .04, .05, 0)],
    "sweet_maize": [(1, .04, .10, 0), (110, 0, 0, 0), (135, .10, 0, 0),
                    (160, .55, 0, 0), (185, .88, 0, 0), (215, .80, .10, 0),
                    (228, .02, .25, 0), (300, .03, .05, 0), (366, .04, .05, 0)],
    "sunflower": [(1, .04, .05, 0), (115, 0, 0, 0), (132, 0, 0, 0),
                  (150, .15, 0, 0), (170, .55, 0, 0), (195, .85, 0, 0),
                  (215, .68, .22, 0), (235, .30, .60, 0), (255, .08, .80, 0),
                  (264, .02, .40, 0), (300, .03, .10, 0), (366, .05, 0, 0)],
    "soybean": [(1, .04, .05, 0), (130, 0, 0, 0), (155, .10, 0, 0),
                (180, .50, 0, 0), (210, .90, 0, 0), (240, .75, .20, 0),
                (260, .20, .70, 0), (275, .02, .40, 0), (366, .05, 0, 0)],
    "sugar_beet": [(1, .05, 0, 0), (80, 0, 0, 0), (110, .05, 0, 0),
                   (140, .35, 0, 0), (170, .85, 0, 0), (240, .92, 0, 0),
                   (280, .78, .10, 0), (296, .60, .10, 0), (300, .02, .05, 0),
                   (366, .04, 0, 0)],
    "potato": [(1, .02, 0, 0), (100, 0, 0, 0), (130, .10, 0, 0),
               (155, .70, 0, 0), (185, .86, 0, 0), (205, .50, .35, 0),
               (225, .10, .60, 0), (235, .02, .10, 0), (366, .05, 0, 0)],
    "rapeseed": [(1, .55, 0, 0), (50, .55, 0, 0), (78, .78, 0, 0),
                 (95, .80, 0, 0), (110, .45, 0, .45), (128, .72, 0, .08),
                 (140, .75, .05, 0), (160, .40, .45, 0), (180, .10, .80, 0),
                 (190, .02, .50, 0), (235, .05, .10, 0), (250, .15, 0, 0),
                 (300, .45, 0, 0), (366, .50, 0, 0)],
    "peas": [(1, .02, 0, 0), (70, 0, 0, 0), (95, .15, 0, 0), (120, .60, 0, 0),
             (145, .85, 0, 0), (160, .50, .40, 0), (175, .10, .80, 0),
             (185, .02, .40, 0), (230, .05, .10, 0), (366, .05, 0, 0)],
    "mown_grass": [(1, .55, .05, 0), (60, .60, 0, 0), (100, .85, 0, 0),
                        (135, .90, 0, 0), (140, .25, .30, 0), (165, .75, 0, 0),
                        (190, .75, .05, 0), (195, .25, .35, 0), (230, .55, .10, 0),
                        (255, .60, 0, 0), (260, .30, .20, 0), (300, .60, 0, 0),
                        (366, .55, .05, 0)],
    "grazed_grass": [(1, .60, .05, 0), (100, .82, 0, 0), (150, .85, 0, 0),
                        (156, .40, .30, 0), (185, .65, .10, 0),
                        (220, .50, .30, 0), (270, .65, .05, 0), (366, .60, .05, 0)],
    "alfalfa": [(1, .35, .10, 0), (80, .50, 0, 0), (125, .90, 0, 0),
                (130, .20, .30, 0), (160, .85, 0, 0), (165, .20, .30, 0),
                (195, .80, 0, 0), (200, .20, .35, 0), (235, .70, .05, 0),
                (240, .25, .30, 0), (280, .60, 0, 0), (366, .35, .10, 0)],
    "fallow": [(1, .30, .20, 0), (90, .35, .10, 0), (140, .60, .10, 0),
               (170, .55, .20, 0), (180, .15, .40, 0), (230, .25, .40, 0),
               (280, .35, .20, 0), (366, .30, .20, 0)],
    "vineyard": [(1, .12, .05, 0), (110, .12, 0, 0), (130, .20, 0, 0),
                 (170, .40, 0, 0), (220, .45, 0, 0), (260, .35, .05, 0),
                 (290, .20, .10, 0), (310, .10, .10, 0), (366, .12, .05, 0)],
    "orchard": [(1, .30, .05, 0), (90, .35, 0, 0), (120, .55, 0, 0),
                (180, .65, 0, 0), (250, .60, 0, 0), (290, .45, .10, 0),
                (320, .30, .10, 0), (366, .30, .05, 0)],
    "border": [(1, .45, .10, 0), (100, .70, 0, 0), (170, .60, .20, 0),
               (220, .40, .40, 0), (280, .55, .10, 0), (366, .45, .10, 0)],
    # Land outside parcels: hedges, trees and roads (scaled per pixel by tree cover).
    "hedge": [(1, .30, .10, 0), (100, .45, 0, 0), (130, .85, 0, 0),
              (260, .80, 0, 0), (300, .50, .20, 0), (330, .30, .10, 0),
              (366, .30, .10, 0)],
}
# Green-up of a catch crop sown after the harvest (added to the main crop).
CATCH_CROP = [(1, 0, 0, 0), (235, 0, 0, 0), (260, .10, 0, 0), (290, .50, 0, 0),
              (320, .45, .05, 0), (366, .25, .10, 0)]
# Leaf NIR relative to cereals: broadleaf canopies scatter more.
NIR_OF = {"sugar_beet": 1.15, "potato": 1.12, "sunflower": 1.10, "soybean": 1.10,
          "rapeseed": 1.08, "peas": 1.05, "alfalfa": 1.05, "maize": 1.04,
          "silage_maize": 1.04, "sweet_maize": 1.04}


def cover_table(parcels) -> np.ndarray:
  """float32 [P+1, 367, 3]: green, dry, flower cover of each parcel per day.

  Args:
    parcels: the demo's Parcels (`pheno`, `shift`, `amplitude`, `catch` [P]).
  Row 0 is the land outside parcels (hedges and roads); row p is parcel p-1.
  Vectorized over the parcels of a crop; one loop over crops.
  """
  days = np.arange(367, dtype=np.float64)
  pheno = np.concatenate([["hedge"], parcels.pheno])
  shift = np.concatenate([[0.0], parcels.shift])
  amp = np.concatenate([[1.0], parcels.amplitude])
  table = np.zeros((len(pheno), 367, 3), np.float32)
  for name, knots in PHENOLOGY.items():
    idx = np.flatnonzero(pheno == name)
    if idx.size:
      table[idx] = _interp(days[None] - shift[idx, None], knots)
  catch = np.flatnonzero(np.concatenate([[False], parcels.catch != ""]))
  table[catch] += _interp(days[None] - shift[catch, None], CATCH_CROP)
  table[..., 0] *= amp[:, None]
  total = table.sum(-1, keepdims=True)
  return np.where(total > 0.98, table * 0.98 / np.maximum(total, 1e-6), table)


def _interp(x: np.ndarray, knots) -> np.ndarray:
  """[..., 3] piecewise-linear cover fractions of the knots at days x."""
  k = np.asarray(knots, np.float64)
  return np.stack([np.interp(x, k[:, 0], k[:, i]) for i in (1, 2, 3)], -1)
