"""Galleries (albums): named, ordered-by-addition sets of an owner's images."""
