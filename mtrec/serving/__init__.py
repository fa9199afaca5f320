"""The export stage: SavedModel export with a raw-input serving signature, and batch
scoring with it. Not named `export`: importing mtrec.export would replace the API verb
`mtrec.export` (a function of the mtrec package) with the subpackage."""
