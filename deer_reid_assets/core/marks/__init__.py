"""A deer's other marks (throat patch, flank marks, ear notches: recorded by people) and its body size
class (measured from its boxes per camera), aggregated into ``deer.physical_features``."""
