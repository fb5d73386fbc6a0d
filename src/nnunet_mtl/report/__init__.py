"""``nnunet-mtl report``: one self-contained HTML report of a model and its predictions."""
