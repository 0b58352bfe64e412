"""medxfer: transfer learning for medical image classifiers, on Ray and Kubernetes."""

__version__ = "0.1.0"
