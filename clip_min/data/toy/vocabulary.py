"""What the toy world can draw, and the words its captions and articles are made of."""

# ---- what can be drawn -------------------------------------------------------------------
SHAPES = ("circle", "square", "triangle", "star", "cross")
SHAPE_PLURALS = {
    "circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses",
}
COLORS = {  # shape colours, RGB
    "red": (210, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (240, 215, 40),
    "green": (40, 160, 70),
    "blue": (40, 90, 210),
    "purple": (130, 60, 180),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
# Gray is only ever a background, so the "color" transfer task can draw on it unambiguously.
# Few backgrounds: with many, the background alone tells pictures apart in a contrastive batch
# and the model never needs to learn the shapes.
BACKGROUNDS = {"gray": (128, 128, 128), "white": COLORS["white"], "black": COLORS["black"]}
RADII = {"small": 8.5, "large": 13.0}  # in pixels of a 64-pixel image
POSITIONS = ("left", "right", "top", "bottom", "center")
POSITION_PHRASES = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "along the top"),
    "bottom": ("at the bottom", "along the bottom"),
    "center": ("in the center", "in the middle"),
}
COUNT_WORDS = {2: "two", 3: "three"}
SUPERSAMPLE = 4  # draw this many times larger, then shrink: smooth edges at 64 pixels

# ---- what captions and articles are made of (no word here may describe the pixels) --------
OBJECT_NOUNS = {
    "circle": ("medallion", "coin", "disc"),
    "square": ("tile", "panel", "plaque"),
    "triangle": ("pennant", "sail", "gable"),
    "star": ("emblem", "badge", "insignia"),
    "cross": ("crucifix", "waymark", "memorial"),
}
OBJECT_PLURALS = {"insignia": "insignia", "crucifix": "crucifixes"}  # everything else takes an "s"
GENERIC_NOUNS = ("piece", "object", "work", "artefact", "item")
COLOR_SURNAMES = {  # surnames that evoke a colour in another language
    "red": ("Rossi", "Roth"),
    "orange": ("Naranjo", "Oranje"),
    "yellow": ("Amarillo", "Giallo"),
    "green": ("Verdi", "Gruen"),
    "blue": ("Blau", "Azul"),
    "purple": ("Porfirio", "Viola"),
    "white": ("Blanc", "Weiss"),
    "black": ("Negri", "Schwarz"),
}
FIRST_NAMES = (
    "Ilse", "Marek", "Ana", "Tomas", "Jorunn", "Emil", "Sofia", "Lucien", "Hana", "Pieter",
    "Ines", "Karl", "Mirela", "Oskar", "Elif", "Joaquim", "Ada", "Nils", "Vera", "Teodor",
    "Greta", "Aurelio", "Maren", "Dmitri", "Yusuf", "Clara", "Benedikt", "Lotte", "Ravi", "Mei",
)
SURNAMES = (
    "Varga", "Moreau", "Lindqvist", "Okafor", "Halloran", "Castell", "Petrov", "Nakamura",
    "Dumont", "Kessler", "Albescu", "Ferreira", "Sato", "Novak", "Hartmann", "Quist", "Ellery",
    "Marchetti", "Bergstrom", "Duval", "Kowalski", "Ortega", "Lindgren", "Haddad", "Abernathy",
    "Vasquez", "Fontaine", "Oyelaran", "Tanaka", "Mendel", "Ricci", "Holm", "Strand", "Aalto",
    "Kaur", "Nyberg", "Ruiz", "Sorensen", "Janssen", "Lazaro",
)
CITIES = (
    "Lyon", "Ghent", "Porto", "Tallinn", "Krakow", "Bergen", "Trieste", "Valletta", "Kyoto",
    "Quebec", "Bruges", "Salzburg", "Turku", "Ljubljana", "Seville", "Bologna", "Aarhus", "Graz",
    "Riga", "Vilnius", "Cork", "Utrecht", "Basel", "Nantes", "Coimbra", "Brno", "Plovdiv", "Izmir",
)
BACKGROUND_CITIES = dict(zip(BACKGROUNDS, CITIES))  # the city a caption ties to each background
EVENTS = ("Fair", "Exhibition", "Jubilee", "Regatta", "Congress", "Festival", "Salon", "Exposition")
PROFESSIONS = (
    "sculptor", "engraver", "goldsmith", "architect", "collector", "diplomat", "printer",
    "cartographer", "explorer", "merchant", "bishop", "admiral",
)
DOMAINS = ("decorative arts", "civic regalia", "maritime objects", "folk crafts", "ceremonial objects")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
