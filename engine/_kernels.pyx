# cython: language_level=3
def available_isas():
    return []
