"""Physical constants (CGS and keV), defined once for the whole package.

CODATA 2018 values (exact where the 2019 SI defines them); the solar mass and the kiloparsec are
the ones TNG's snapshot headers use for its code units (UnitMass_in_g = 1e10 MSUN_G,
UnitLength_in_cm = KPC_CM), so synthetic and real cutouts convert alike.
"""

KEV_ERG = 1.602176634e-9  # exact
K_B_ERG_K = 1.380649e-16  # exact
#: keV / k_B [K], to 7 digits (CODATA: 1.160451812e7): the observe stage's kT > 0.1 keV cut uses it.
K_PER_KEV = 1.160452e7
H_ERG_S = 6.62607015e-27  # exact
M_P_G = 1.67262192e-24
RYDBERG_KEV = 13.605693e-3
HC_KEV_ANGSTROM = 12.398419843
MSUN_G = 1.989e33
KPC_CM = 3.085678e21
G_CGS = 6.6743e-8
