"""Word lists for the shipped prompt corpus (docs/method.md §6: no captions can be downloaded, so we
generate them).

Plain tuples of lowercase phrases, kept in Python so they ship with the pack and import without any
file I/O. Editing any list changes `prompt_corpus.CORPUS_VERSION` (it hashes these lists), which
invalidates cached covariances automatically.
"""

from __future__ import annotations

# One phrase per line would make these lists ~900 lines long; keep them packed.
# fmt: off

# --- subjects, grouped so that actions stay plausible --------------------------------------------

ANIMALS = (
    "dog", "cat", "puppy", "kitten", "horse", "pony", "cow", "sheep", "goat", "pig", "rabbit",
    "hamster", "guinea pig", "mouse", "rat", "squirrel", "fox", "wolf", "bear", "polar bear",
    "panda", "koala", "kangaroo", "lion", "tiger", "leopard", "cheetah", "jaguar", "elephant",
    "giraffe", "zebra", "hippo", "rhino", "camel", "llama", "alpaca", "deer", "moose", "elk",
    "monkey", "gorilla", "chimpanzee", "orangutan", "sloth", "raccoon", "otter", "beaver",
    "hedgehog", "bat", "owl", "eagle", "hawk", "falcon", "parrot", "crow", "raven", "pigeon",
    "sparrow", "robin", "swan", "duck", "goose", "chicken", "rooster", "peacock", "flamingo",
    "penguin", "seagull", "pelican", "hummingbird", "dolphin", "whale", "shark", "octopus",
    "jellyfish", "seal", "sea turtle", "turtle", "tortoise", "frog", "toad", "lizard", "gecko",
    "iguana", "chameleon", "snake", "crocodile", "alligator", "goldfish", "koi fish", "crab",
    "lobster", "butterfly", "bee", "ladybug", "dragonfly", "spider", "snail", "corgi", "husky",
    "golden retriever", "labrador", "poodle", "pug", "dachshund", "german shepherd", "beagle",
    "bulldog", "chihuahua", "shiba inu", "border collie", "siamese cat", "tabby cat", "black cat",
    "persian cat", "maine coon", "dragon", "unicorn", "phoenix", "griffin", "dinosaur",
    "tyrannosaurus", "mammoth",
)

PEOPLE = (
    "man", "woman", "boy", "girl", "child", "baby", "toddler", "teenager", "old man", "old woman",
    "young man", "young woman", "grandmother", "grandfather", "couple", "family", "person",
    "astronaut", "firefighter", "police officer", "doctor", "nurse", "chef", "baker", "farmer",
    "fisherman", "soldier", "knight", "samurai", "ninja", "pirate", "cowboy", "wizard", "witch",
    "king", "queen", "prince", "princess", "monk", "priest", "scientist", "teacher", "student",
    "businessman", "businesswoman", "musician", "guitarist", "drummer", "pianist", "singer",
    "dancer", "ballerina", "painter", "photographer", "skateboarder", "surfer", "snowboarder",
    "skier", "cyclist", "runner", "climber", "hiker", "swimmer", "boxer", "football player",
    "basketball player", "tennis player", "clown", "mime", "robot", "cyborg", "android", "alien",
    "vampire", "zombie", "elf", "dwarf", "fairy", "mermaid", "superhero", "detective", "explorer",
    "sailor", "pilot", "mechanic", "carpenter", "blacksmith", "librarian", "waiter", "barista",
    "street vendor", "tourist", "gardener", "shepherd", "warrior", "princess in a gown",
)

OBJECTS = (
    "teddy bear", "toy", "doll", "action figure", "plush toy", "ball", "kite", "balloon", "book",
    "notebook", "pen", "pencil", "backpack", "suitcase", "handbag", "wallet", "umbrella", "hat",
    "cap", "helmet", "crown", "mask", "glasses", "sunglasses", "watch", "clock", "alarm clock",
    "ring", "necklace", "bracelet", "earrings", "shoe", "sneaker", "boot", "sandal", "jacket",
    "sweater", "dress", "scarf", "glove", "tie", "t-shirt", "hoodie", "chair", "armchair", "sofa",
    "couch", "bench", "table", "desk", "bed", "lamp", "candle", "lantern", "vase", "teapot",
    "kettle", "cup", "mug", "glass", "bottle", "wine glass", "bowl", "plate", "fork", "spoon",
    "knife", "frying pan", "pot", "basket", "box", "wooden box", "treasure chest", "mirror",
    "picture frame", "painting", "sculpture", "statue", "bust", "trophy", "guitar", "violin",
    "piano", "drum", "trumpet", "saxophone", "flute", "microphone", "headphones", "camera",
    "television", "radio", "laptop", "computer", "keyboard", "smartphone", "tablet", "robot toy",
    "chess board", "chess piece", "dice", "playing cards", "key", "lock", "hammer", "wrench",
    "screwdriver", "axe", "sword", "shield", "bow", "arrow", "telescope", "microscope", "globe",
    "map", "compass", "hourglass", "bell", "fan", "toaster", "blender", "washing machine",
    "refrigerator", "bicycle", "skateboard", "surfboard", "snowboard", "skis", "tent",
    "sleeping bag", "fire hydrant", "mailbox", "traffic light", "street lamp", "stop sign",
    "parking meter", "ceramic cat", "rubber duck", "plastic dinosaur", "clay pot", "origami crane",
    "snow globe", "music box", "pocket watch", "sunflower pot", "perfume bottle", "lipstick",
)

VEHICLES = (
    "car", "sports car", "vintage car", "race car", "truck", "pickup truck", "fire truck",
    "ambulance", "police car", "taxi", "bus", "school bus", "double-decker bus", "van", "jeep",
    "motorcycle", "scooter", "tractor", "train", "steam locomotive", "tram", "subway train",
    "airplane", "jet", "helicopter", "hot air balloon", "blimp", "rocket", "spaceship",
    "space station", "boat", "sailboat", "yacht", "canoe", "kayak", "ship", "cruise ship",
    "submarine", "tank", "bulldozer", "excavator", "forklift", "golf cart", "carriage",
)

FOOD = (
    "apple", "banana", "orange", "lemon", "strawberry", "cherry", "grapes", "watermelon",
    "pineapple", "mango", "peach", "pear", "avocado", "tomato", "carrot", "broccoli", "potato",
    "onion", "pumpkin", "mushroom", "corn", "bread", "baguette", "croissant", "donut", "bagel",
    "pancake", "waffle", "cake", "birthday cake", "cupcake", "cookie", "pie", "ice cream",
    "chocolate bar", "candy", "pizza", "hamburger", "hot dog", "sandwich", "taco", "burrito",
    "sushi", "ramen", "noodles", "spaghetti", "salad", "soup", "steak", "fried chicken", "egg",
    "fried egg", "cheese", "coffee", "latte", "tea", "milkshake", "smoothie", "lemonade", "wine",
    "beer", "cocktail", "dumplings", "curry", "rice bowl",
)

PLANTS = (
    "tree", "oak tree", "pine tree", "palm tree", "cherry tree", "willow tree", "bonsai tree",
    "cactus", "succulent", "fern", "flower", "rose", "tulip", "sunflower", "daisy", "lily",
    "orchid", "lotus", "lavender", "poppy", "bouquet", "potted plant", "ivy", "bamboo",
    "moss", "maple leaf", "mushroom cluster", "vine",
)

BUILDINGS = (
    "house", "cottage", "cabin", "log cabin", "mansion", "castle", "palace", "tower",
    "lighthouse", "windmill", "barn", "church", "cathedral", "temple", "pagoda", "mosque",
    "skyscraper", "office building", "apartment building", "bridge", "stone bridge", "fountain",
    "monument", "ruins", "pyramid", "treehouse", "igloo", "hut", "greenhouse", "train station",
    "gas station", "diner", "cafe", "bakery", "bookstore", "library", "museum", "school",
    "hospital", "factory", "stadium", "observatory", "gazebo", "well", "dam",
)

PLURAL_SUBJECTS = (
    "dogs", "cats", "horses", "birds", "sheep", "cows", "ducks", "fish", "people", "children",
    "friends", "soldiers", "dancers", "musicians", "tourists", "cars", "boats", "balloons",
    "flowers", "trees", "books", "apples", "candles", "lanterns", "bicycles", "houses", "cups",
    "cookies", "butterflies", "penguins", "elephants", "wolves", "robots", "mountains", "clouds",
    "stars",
)

# --- attributes ------------------------------------------------------------------------------------

COLORS = (
    "red", "blue", "green", "yellow", "orange", "purple", "pink", "black", "white", "gray",
    "brown", "beige", "gold", "golden", "silver", "bronze", "turquoise", "teal", "cyan", "magenta",
    "navy blue", "dark green", "light blue", "pastel pink", "crimson", "scarlet", "ivory",
    "emerald", "lavender", "maroon", "rainbow-colored", "neon green", "cream-colored", "rusty",
    "black and white", "multicolored",
)

MATERIALS = (
    "wooden", "metal", "steel", "iron", "copper", "brass", "golden", "silver", "glass", "crystal",
    "ceramic", "porcelain", "clay", "stone", "marble", "granite", "plastic", "rubber", "leather",
    "woolen", "knitted", "felt", "paper", "cardboard", "origami", "lego", "wax", "ice", "chocolate",
    "cotton", "velvet", "silk", "denim", "bamboo", "concrete", "carbon fiber", "jade", "plush",
)

ADJECTIVES = (
    "small", "tiny", "large", "huge", "giant", "little", "old", "ancient", "new", "modern",
    "vintage", "antique", "retro", "futuristic", "rusty", "shiny", "dirty", "clean", "broken",
    "cute", "adorable", "beautiful", "elegant", "ugly", "scary", "spooky", "happy", "sad", "angry",
    "sleepy", "curious", "friendly", "fluffy", "furry", "wet", "dry", "colorful", "bright", "dark",
    "glowing", "sparkling", "transparent", "fuzzy", "smooth", "rough", "tall", "short", "fat",
    "thin", "round", "square", "majestic", "mysterious", "magical", "weird", "funny", "lonely",
    "abandoned", "decorated", "handmade", "miniature", "oversized", "wooden", "hand-painted",
    "smiling", "tired", "proud", "brave", "shy", "playful", "fierce", "gentle", "striped",
    "spotted", "polka-dot", "wrinkled", "worn", "pristine", "cozy", "steampunk", "cyberpunk",
    "gothic", "baroque", "minimalist", "medieval", "victorian",
)

# --- places and scenes -----------------------------------------------------------------------------

PLACES = (
    "on a beach", "on the beach at sunset", "in a forest", "in a dark forest", "in the jungle",
    "in the desert", "on a mountain", "on top of a mountain", "in the mountains", "in a meadow",
    "in a field of flowers", "in a wheat field", "by a lake", "on a lake", "by the river",
    "under a waterfall", "in the snow", "on a glacier", "in a cave", "under the sea",
    "underwater", "in outer space", "on the moon", "on mars", "in a city", "in the city",
    "on a busy street", "on a city street", "in an alley", "in times square", "in tokyo",
    "in paris", "in new york", "in london", "in venice", "in a small village", "in a park",
    "in a garden", "in a backyard", "on a farm", "in a barn", "in a kitchen", "in a living room",
    "in a bedroom", "in a bathroom", "in an office", "in a classroom", "in a library",
    "in a museum", "in a cafe", "in a restaurant", "in a bar", "in a supermarket",
    "in a train station", "at the airport", "on a train", "on a bus", "in a car", "on a boat",
    "on a bridge", "on a rooftop", "on a balcony", "on a porch", "by the window",
    "on a table", "on a wooden table", "on a desk", "on a shelf", "on the floor", "on a bed",
    "on a sofa", "on a rock", "on the grass", "on the sand", "in the rain", "in a puddle",
    "in a snowstorm", "in the fog", "at a festival", "at a concert", "at a party", "at the zoo",
    "at the circus", "in a stadium", "in a temple", "in a castle", "in a cathedral",
    "in a spaceship", "in a laboratory", "in a factory", "in a greenhouse", "in a flower shop",
    "in a toy store", "in an abandoned building", "in the ruins", "in a haunted house",
    "in a fantasy world", "in a cyberpunk city", "in a post-apocalyptic wasteland",
    "on an alien planet", "in a swamp", "in a canyon", "on a cliff", "on an island",
    "on a tropical island", "in the arctic", "in the savanna", "next to a fireplace",
    "in front of a brick wall", "in front of a white background", "on a white background",
    "in a studio", "on a stage", "in a subway", "in a parking lot", "at a bus stop",
    "in a playground", "at a market", "in a bakery", "in a workshop", "in the clouds",
)

TIMES = (
    "at night", "at sunset", "at sunrise", "at dawn", "at dusk", "in the morning",
    "in the afternoon", "at noon", "at midnight", "during golden hour", "during a storm",
    "in winter", "in summer", "in autumn", "in spring", "on a rainy day", "on a sunny day",
    "on a foggy morning", "under the stars", "under a full moon", "during the blue hour",
    "on a cloudy day", "in the evening",
)

# --- actions, by subject kind ----------------------------------------------------------------------

ANIMATE_ACTIONS = (
    "sitting", "standing", "running", "walking", "jumping", "sleeping", "lying down", "eating",
    "drinking water", "playing", "looking at the camera", "looking up", "looking out the window",
    "smiling", "laughing", "resting", "waiting", "hiding", "climbing", "swimming", "dancing",
    "reading a book", "wearing a hat", "wearing sunglasses", "wearing a scarf",
    "wearing a red jacket", "holding an umbrella", "holding a cup of coffee", "holding a sign",
    "playing the guitar", "riding a bicycle", "riding a skateboard", "flying a kite",
    "playing with a ball", "catching a frisbee", "chasing a butterfly", "staring at the sea",
    "sitting next to a fireplace", "taking a selfie", "posing for a photo", "yawning",
    "stretching", "sniffing flowers", "exploring", "fighting", "singing", "painting a picture",
    "cooking dinner", "drinking tea", "crossing the street", "waving", "peeking out of a box",
    "curled up", "shaking off water", "howling at the moon",
)

OBJECT_ACTIONS = (
    "sitting", "standing", "lying", "placed", "resting", "displayed", "hanging", "floating",
    "abandoned", "half buried", "partially covered in snow", "covered in dust",
    "covered in flowers", "wrapped in ribbon", "surrounded by candles", "reflected in a mirror",
    "glowing softly", "casting a long shadow", "lit by a spotlight", "melting",
    "overgrown with moss", "stacked on top of each other", "broken into pieces", "for sale",
    "leaning against a wall",
)

VEHICLE_ACTIONS = (
    "parked", "driving", "speeding", "racing", "stuck in traffic", "crossing a bridge",
    "waiting", "abandoned", "covered in snow", "sailing", "flying", "landing", "taking off",
    "rusting", "crashed", "stopped", "moving fast",
)

# --- framing, lighting, medium, style --------------------------------------------------------------

PHOTO_PHRASES = (
    "close-up", "macro shot", "wide shot", "wide angle", "aerial view", "top-down view",
    "low angle", "side view", "portrait", "full body shot", "headshot", "35mm photograph",
    "50mm lens", "85mm lens", "telephoto", "shallow depth of field", "bokeh", "long exposure",
    "motion blur", "film grain", "kodak portra 400", "polaroid", "disposable camera",
    "dslr", "iphone photo", "security camera footage", "drone shot", "studio lighting",
    "soft lighting", "natural light", "rim light", "backlit", "hard shadows", "overcast",
    "golden hour lighting", "cinematic lighting", "volumetric lighting", "neon lights",
    "candlelight", "high contrast", "low key", "high key", "sharp focus", "tilt-shift",
    "fisheye lens", "hdr", "8k", "4k", "uhd", "raw photo", "award-winning photograph",
    "national geographic photo", "editorial photo", "stock photo", "product photo",
    "street photography", "documentary photo", "candid photo",
)

ART_MEDIA = (
    "oil painting", "watercolor painting", "acrylic painting", "pencil sketch",
    "charcoal drawing", "ink drawing", "pen and ink illustration", "digital painting",
    "digital art", "concept art", "illustration", "children's book illustration",
    "comic book panel", "manga panel", "anime screenshot", "cartoon", "pixel art",
    "3d render", "claymation still", "low poly render", "vector art", "flat illustration",
    "woodcut print", "linocut", "engraving", "etching", "stained glass window", "mosaic",
    "tapestry", "embroidery", "paper cutout", "ukiyo-e print", "fresco", "graffiti mural",
    "poster", "vintage poster", "movie poster", "album cover", "book cover", "sticker",
    "logo", "icon", "tattoo design", "blueprint", "pastel drawing", "gouache painting",
    "crayon drawing", "marble sculpture", "bronze sculpture", "photograph", "photo",
    "polaroid photo", "matte painting", "screen print", "isometric illustration",
)

ART_STYLES = (
    "impressionist", "expressionist", "surrealist", "cubist", "art nouveau", "art deco",
    "pop art", "minimalist", "abstract", "realistic", "hyperrealistic", "photorealistic",
    "impasto", "baroque", "renaissance", "romantic", "gothic", "psychedelic", "vaporwave",
    "synthwave", "cyberpunk", "steampunk", "dieselpunk", "solarpunk", "fantasy", "dark fantasy",
    "sci-fi", "whimsical", "dreamy", "moody", "noir", "retro", "vintage", "futuristic",
    "studio ghibli style", "pixar style", "disney style", "anime style", "cel shaded",
    "in the style of van gogh", "in the style of monet", "in the style of rembrandt",
    "in the style of hokusai", "in the style of vermeer", "in the style of klimt",
    "in the style of turner", "in the style of da vinci", "in the style of picasso",
    "in the style of dali", "in the style of mucha",
)

QUALITY_TAGS = (
    "highly detailed", "intricate details", "ultra detailed", "extremely detailed", "masterpiece",
    "best quality", "high quality", "trending on artstation", "featured on pixiv",
    "award winning", "sharp focus", "smooth", "elegant", "octane render", "unreal engine",
    "unreal engine 5", "ray tracing", "global illumination", "subsurface scattering",
    "physically based rendering", "8k resolution", "4k", "hd", "cinematic", "epic composition",
    "dramatic lighting", "beautiful lighting", "vibrant colors", "muted colors",
    "pastel colors", "warm colors", "cool tones", "soft colors", "rich colors",
    "symmetrical", "centered", "rule of thirds", "depth of field", "volumetric fog",
    "god rays", "lens flare", "bloom", "detailed background", "simple background",
    "concept art", "matte painting", "trending on behance", "artstation hq", "professional",
    "studio quality", "clean lines", "thick brush strokes", "visible brushstrokes",
    "textured canvas", "soft shading", "high resolution", "realistic textures",
    "fine art", "gallery quality", "film still", "color graded", "atmospheric",
)

# Clause fragments that extend captions into multi-clause prompts.
DETAILS = (
    "with a big smile", "with bright eyes", "with long hair", "with curly hair",
    "with freckles", "with a long tail", "with large wings", "with glowing eyes",
    "with a tiny hat", "with a bow tie", "with a red collar", "with snow on its back",
    "with flowers in the background", "with mountains in the background",
    "with the city skyline in the background", "with a sunset behind it",
    "with a rainbow in the sky", "with clouds in the sky", "with fireworks in the sky",
    "with people walking by", "with birds flying overhead", "with lights reflecting on the water",
    "with steam rising", "with leaves falling", "with snow falling", "with rain falling",
    "with sunlight streaming through the trees", "with a cup of coffee beside it",
    "with books scattered around", "with toys on the floor", "next to a window",
    "next to a vase of flowers", "next to a sleeping cat", "beside a lit candle",
    "surrounded by fireflies", "surrounded by butterflies", "surrounded by tall grass",
    "in the foreground", "in the background", "seen from above", "seen from behind",
    "looking into the distance", "casting a shadow on the wall", "reflected in the water",
    "while the sun sets", "as the snow falls", "as night falls", "while it is raining",
    "and a dog sleeping nearby", "and a small boat on the water", "and a tree on the left",
    "and a red door behind", "and a clock on the wall", "and warm light from the windows",
)

# Training-style templates (docs/method.md §6) so that C covers the positions the concept prompts use.
TRAINING_TEMPLATES = (
    "a photo of a {}", "a good photo of the {}", "image of a {}", "a photo of the {}",
    "a rendering of a {}", "a cropped photo of the {}", "a bright photo of a {}",
    "a dark photo of the {}", "a close-up photo of a {}", "a photo of my {}",
    "a photo of the small {}", "a photo of the large {}", "a photo of one {}", "a picture of a {}",
    "a blurry photo of the {}", "a photo of a clean {}", "a photo of a dirty {}", "a {}",
    "the {}", "{}",
)

# fmt: on
