"""Pure imaging: film layout, pixel transforms, page rendering, PDF.

Imports only pydicom, numpy and Pillow; knows nothing of networking or the database.
"""

# Pillow imports PIL.ImageFile lazily inside Image.tobytes(); when two threads (the
# print job runner and a request) reach that first import at once, one of them can see
# a partly initialised module ("cannot import name 'ImageFile' from 'PIL'", seen in CI).
# Importing it here, before any thread starts, removes the race.
from PIL import ImageFile as _ImageFile  # noqa: E402,F401
