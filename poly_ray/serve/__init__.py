"""Ray Serve deployments: thin classes that adapt Ray to the plain logic in poly_ray."""
