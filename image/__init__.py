"""Pure imaging: film layout, pixel transforms, page rendering, PDF.

Imports only pydicom, numpy and Pillow; knows nothing of networking or the database.
"""
