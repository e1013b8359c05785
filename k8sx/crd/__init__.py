"""CRDs: OpenAPI schema building, apiextensions.k8s.io/v1 assembly, v1beta1 conversion and an
offline validator of the API server's rules."""
