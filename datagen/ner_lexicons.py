"""The hand-written lexicons of the quickstart NER generator: names, places, organisations, products, calendar words.

Plain data (lists in a fixed order: the generator's seeded choices depend on it). Names avoid words that double as
places or common words. Used by `ner_samplers.py`; see `make_quickstart_ner.py` for what the data is.
"""

from __future__ import annotations

import re


def words(block: str) -> list[str]:
    """Split a lexicon block on newlines/commas; keep order, drop blanks and duplicates."""
    seen: dict[str, None] = {}
    for part in re.split(r"[\n,]", block):
        part = part.strip()
        if part and part not in seen:
            seen[part] = None
    return list(seen)


# ---------------------------------------------------------------------------
# Lexicons (hand-written; names avoid words that double as places or common words)
# ---------------------------------------------------------------------------

FIRST_NAMES = words("""
Amara, Liam, Sofia, Mateo, Priya, Kenji, Olga, Tomasz, Fatima, Diego, Ingrid, Kwame, Mei, Rafael,
Aisha, Henrik, Lucia, Arjun, Chloe, Dmitri, Nadia, Oscar, Yuki, Elena, Samuel, Zara, Ibrahim,
Hannah, Marco, Leila, Noah, Anika, Pablo, Greta, Tariq, Emma, Javier, Sunita, Felix, Ayumi,
Bogdan, Clara, Emeka, Freya, Gustavo, Hiroshi, Isabel, Jonas, Katarzyna, Lars, Miriam, Nikolai,
Olivia, Pedro, Rania, Stefan, Thandiwe, Ursula, Viktor, Wanjiru, Xavier, Yasmin, Zoltan, Adele,
Bruno, Camila, Dario, Esther, Farid, Gabriela, Hugo, Ines, Jakub, Kofi, Lena, Magnus, Nora,
Omar, Paulina, Quentin, Rosa, Sanjay, Tove, Umar, Valentina, Wei, Yara, Anders, Beatriz, Chidi,
Daniela, Erik, Fiona, Goran, Helga, Ivan, Julia, Kamala, Lorenzo, Maya, Nikhil, Orla, Pieter,
Renata, Soren, Tatiana, Vikram, Wilhelmina, Ximena, Youssef, Zainab, Alejandro, Bianca, Cyrus,
Dagny, Elif, Fernando, Gita, Hamza, Ilse, Joaquin, Keiko, Leon, Malika, Nils, Ozan, Petra,
Rohan, Sakura, Teodor, Uma, Vera, Wiktor, Yosef, Zofia, Agnes, Bilal, Consuelo, Declan, Eun-ji,
Farah, Gideon, Hana, Imran, Jorge, Kaito, Linnea, Mehmet, Naomi, Obinna, Pilar, Rashid, Signe,
Tobias, Ulrike, Valeria, Yusuf, Aurelio, Britta, Cosmin, Dalia, Emil, Filipa, Grigor, Halima,
Idris, Jana, Kasper, Lucinda, Mirela, Noor, Otto, Patrice, Radek, Saoirse, Thiago, Vesna, Wren
""")

LAST_NAMES = words("""
Okafor, Lindqvist, Moreno, Tanaka, Kowalski, Haddad, Fernandes, Nakamura, Petrov, Mensah,
Schneider, Chowdhury, Rossi, Novak, Adeyemi, Johansson, Castillo, Watanabe, Ivanova, Boateng,
Hoffmann, Iyer, Bianchi, Dvorak, Ozturk, Larsen, Guerrero, Yamamoto, Sokolov, Asante, Richter,
Banerjee, Ricci, Horvat, Kaya, Nielsen, Vargas, Suzuki, Popescu, Owusu, Keller, Menon, Greco,
Kovacs, Demir, Andersen, Rojas, Kobayashi, Volkov, Appiah, Wagner, Pillai, Conti, Svoboda,
Aydin, Halvorsen, Medina, Matsumoto, Morozov, Nwosu, Becker, Rao, Marino, Blazek, Celik,
Eriksen, Salazar, Inoue, Lebedev, Danso, Vogel, Kapoor, Esposito, Zielinski, Arslan, Berg,
Navarro, Kimura, Orlov, Achebe, Krause, Malhotra, Fontana, Wojcik, Yilmaz, Holm, Delgado,
Hayashi, Fedorov, Eze, Brandt, Sharma, Moretti, Lewandowski, Sahin, Dahl, Pacheco, Shimizu,
Kuznetsov, Oyelaran, Hartmann, Verma, Gallo, Mazur, Polat, Strand, Cabrera, Ishikawa, Pavlov,
Okonkwo, Lange, Nair, Romano, Kaczmarek, Koc, Lund, Ortega, Mori, Sorokin, Ogunleye, Fischer,
Reddy, Ferrari, Grabowski, Aksoy, Bakker, Molina, Fujita, Zaitsev, Chukwu, Zimmermann, Desai,
Caruso, Pawlak, Tekin, Visser, Herrera, Okada, Belov, Obi, Schulz, Joshi, Rinaldi, Sikora,
O'Brien, MacLeod, Gallagher, Fitzgerald, Whitaker, Ashworth, Pemberton, Thornbury, Calloway,
Drummond, Hargreaves, Kingsley, Lockhart, Merriweather, Prescott, Radcliffe, Sutherland
""")

CITIES = words("""
Lisbon, Nairobi, Osaka, Krakow, Montreal, Valparaiso, Tbilisi, Accra, Rotterdam, Hanoi,
Edinburgh, Marrakesh, Bergen, Cusco, Adelaide, Bilbao, Kyoto, Lagos, Gdansk, Porto, Seville,
Reykjavik, Tallinn, Bratislava, Ljubljana, Zagreb, Sarajevo, Thessaloniki, Izmir, Beirut,
Amman, Muscat, Doha, Karachi, Pune, Chennai, Kathmandu, Colombo, Dhaka, Yangon, Chiang Mai,
Da Nang, Cebu, Surabaya, Busan, Sapporo, Nagoya, Taipei, Shenzhen, Chengdu, Ulaanbaatar,
Almaty, Tashkent, Baku, Yerevan, Odesa, Lviv, Vilnius, Riga, Helsinki, Uppsala, Aarhus,
Gothenburg, Trondheim, Hamburg, Leipzig, Munich, Zurich, Geneva, Lyon, Marseille, Bordeaux,
Toulouse, Nantes, Antwerp, Ghent, Utrecht, Eindhoven, Cork, Galway, Belfast, Cardiff, Leeds,
Bristol, Glasgow, Manchester, Liverpool, Valencia, Malaga, Granada, Turin, Bologna, Naples,
Palermo, Florence, Verona, Salzburg, Graz, Innsbruck, Brno, Budapest, Debrecen, Cluj-Napoca,
Timisoara, Plovdiv, Varna, Skopje, Tirana, Podgorica, Split, Dubrovnik, Casablanca, Tunis,
Algiers, Cairo, Alexandria, Khartoum, Addis Ababa, Kampala, Kigali, Dar es Salaam, Zanzibar City,
Lusaka, Harare, Maputo, Durban, Cape Town, Windhoek, Gaborone, Dakar, Abidjan, Kumasi, Ibadan,
Douala, Kinshasa, Luanda, Antananarivo, Port Louis, Perth, Brisbane, Hobart, Wellington,
Christchurch, Auckland, Suva, Honolulu, Anchorage, Seattle, Portland, Denver, Phoenix,
Albuquerque, Houston, Dallas, Nashville, Atlanta, Miami, Pittsburgh, Baltimore, Boston,
Philadelphia, Detroit, Chicago, Minneapolis, Milwaukee, Toronto, Ottawa, Quebec City,
Halifax, Winnipeg, Calgary, Vancouver, Monterrey, Guadalajara, Oaxaca, Merida, Havana,
San Juan, Panama City, Medellin, Cartagena, Quito, Guayaquil, Lima, Arequipa, La Paz,
Santiago, Mendoza, Cordoba, Rosario, Montevideo, Asuncion, Recife, Salvador, Curitiba,
Porto Alegre, Belo Horizonte, Manaus, Fortaleza
""")

COUNTRIES = words("""
Portugal, Kenya, Japan, Poland, Canada, Chile, Georgia, Ghana, the Netherlands, Vietnam,
Scotland, Morocco, Norway, Peru, Australia, Spain, Nigeria, Iceland, Estonia, Slovakia,
Slovenia, Croatia, Greece, Turkey, Lebanon, Oman, Qatar, Pakistan, India, Nepal, Sri Lanka,
Bangladesh, Myanmar, Thailand, the Philippines, Indonesia, South Korea, Taiwan, Mongolia,
Kazakhstan, Uzbekistan, Azerbaijan, Armenia, Ukraine, Lithuania, Latvia, Finland, Sweden,
Denmark, Germany, Switzerland, France, Belgium, Ireland, Wales, Italy, Austria, Hungary,
Romania, Bulgaria, Albania, Montenegro, Tunisia, Egypt, Ethiopia, Uganda, Rwanda, Tanzania,
Zambia, Zimbabwe, Mozambique, South Africa, Namibia, Botswana, Senegal, Cameroon, Angola,
Madagascar, Mauritius, New Zealand, Fiji, Mexico, Cuba, Colombia, Ecuador, Bolivia,
Argentina, Uruguay, Paraguay, Brazil, Jamaica, Costa Rica, Guatemala, Luxembourg, Malta
""")

REGIONS = words("""
Patagonia, Bavaria, Tuscany, Andalusia, Catalonia, Brittany, Provence, Silesia, Transylvania,
Lapland, the Balkans, Scandinavia, Siberia, Kashmir, Punjab, Bengal, Hokkaido, Okinawa,
Queensland, Tasmania, Ontario, Alberta, British Columbia, Nova Scotia, Yukon, Texas, California,
Oregon, Vermont, Montana, Alaska, Sardinia, Sicily, Corsica, Crete, Bali, Borneo, Sumatra,
the Sahara, the Alps, the Andes, the Himalayas, the Pyrenees, the Rockies, the Carpathians,
the Danube, the Mekong, the Nile, the Rhine, the Amazon basin, the Outer Hebrides,
the Lake District, the Atacama Desert, the Serengeti, Lake Titicaca, Lake Victoria
""")

LANDMARKS = words("""
Table Mountain, Mount Kilimanjaro, Machu Picchu, the Eiffel Tower, Mount Fuji, Angkor Wat,
the Acropolis, Central Park, Hyde Park, the Golden Gate Bridge, Victoria Falls, Uluru,
Mont Blanc, the Matterhorn, Ha Long Bay, Iguazu Falls, the Great Barrier Reef
""")

ORG_PREFIX = words("""
Northwind, Bluepeak, Ironbridge, Kestrel, Solvanta, Brightwater, Redfern, Altamira, Corvid,
Helix, Meridian, Quantix, Larkspur, Everhart, Stonegate, Vireo, Pinecrest, Obsidian, Tidewater,
Halcyon, Lumina, Copperleaf, Silverline, Greystone, Novaris, Ardent, Cobalt, Westmark, Fairhaven,
Blackthorn, Zephyra, Orion, Sequoia, Amberly, Harrow, Kinetica, Marlowe, Wrenfield, Astera,
Driftwood, Foxglove, Granite Peak, Highmoor, Juniper, Keystone, Lodestar, Mistral, Nordholm,
Oakhurst, Quillon, Rosewood, Saltmarsh, Thornfield, Umbra, Vantage, Windrose, Yarrow
""")

ORG_INDUSTRY = words("""
Labs, Systems, Logistics, Bank, Energy, Foods, Media, Pharmaceuticals, Airlines, Robotics,
Capital, Motors, Insurance, Analytics, Biotech, Telecom, Shipping, Textiles, Semiconductors,
Software, Health, Mining, Brewing, Publishing, Games, Aerospace, Retail, Solar, Dynamics, Studios
""")

ORG_LEGAL = words("Group, Holdings, Ltd, AG, GmbH, SA, Corp, Partners, Co")

REAL_COMPANIES = words("""
Google, Microsoft, Siemens, Toyota, Spotify, Airbus, Samsung, Nokia, Ericsson, Philips, Unilever,
Nestle, Volvo, IKEA, Heineken, Adidas, Puma, Lego, Maersk, Novartis, Roche, Bayer, Shell, Netflix,
Amazon, Intel, Nvidia, IBM, Oracle, Salesforce, Pfizer, Moderna, Tesla, SpaceX, Boeing, Sony,
Nintendo, Panasonic, Honda, Hyundai, Alibaba, Tencent, Infosys, Tata Motors, Safaricom, MTN,
Ecobank, Petrobras, Embraer, Mercado Libre, Zalando, Shopify, Rakuten, Grab, Flipkart, Jumia
""")

INTL_ORGS = words("""
the United Nations, the World Health Organization, the European Central Bank, the Red Cross,
Amnesty International, Greenpeace, Oxfam, UNICEF, the IMF, the World Bank, Interpol, the OECD,
the African Union, the European Commission, Doctors Without Borders, the WTO
""")

SCIENCE_ORGS = words("""
NASA, CERN, the European Space Agency, the Max Planck Society, the Royal Society, JAXA,
the Wellcome Trust, the Pasteur Institute, the Alan Turing Institute
""")

REAL_UNIVS = words("""
MIT, Stanford University, Oxford University, the Sorbonne, ETH Zurich, the University of Tokyo,
Harvard, Imperial College London, McGill University, the University of Cape Town, KU Leuven
""")

REAL_TEAMS = words("""
Real Madrid, FC Barcelona, Ajax, Bayern Munich, Manchester United, the Boston Celtics,
the Chicago Bulls, the New Zealand All Blacks, Juventus, Boca Juniors, Galatasaray, Benfica
""")

AIRLINES = words("""
Lufthansa, KLM, Emirates, Qantas, Ryanair, easyJet, Aer Lingus, Air Canada, LATAM, Ethiopian Airlines,
Turkish Airlines, Kenya Airways, Iberia, Finnair, SAS, Air India, Vietnam Airlines, Icelandair
""")

NEWS_ORGS = words("""
Reuters, the BBC, the Financial Times, The Guardian, Le Monde, Al Jazeera, the Associated Press,
the New York Times, Bloomberg, The Economist, Der Spiegel, El Pais, the Nikkei, the Irish Times
""")

TEAM_NICKNAMES = words("""
Falcons, Rovers, United, Wanderers, Athletic, Harriers, Comets, Titans, Mariners, Lions,
Owls, Rangers, Stallions, Storm, Vikings, Pirates, Hawks, Tigers, Wolves, Sharks
""")

UNIV_FORMS = ["University of {city}", "{city} Institute of Technology", "{last} College",
              "{city} School of Economics", "{last} Institute", "{city} Polytechnic"]

AGENCY_FORMS = ["{city} Health Authority", "{city} Port Authority", "{country} Space Agency",
                "{city} City Council", "{country} Football Federation", "{city} Chamber of Commerce",
                "{city} Daily News", "The {city} Herald", "{city} Metro Transit"]

PRODUCT_BRANDS = words("""
Zephyr, Nimbus, Pixelwave, Aurora, Vortex, Quasar, Lumen, Tessera, Halo, Strato, Kairo,
Velox, Orbit, Nova, Echo, Prism, Sonic, Apex, Vela, Cirrus, Flux, Atlas, Ember, Nexa,
Solace, Krypton, Tundra, Monsoon, Polaris, Terra
""")

PRODUCT_LINES = words("Pro, Max, Air, Ultra, Mini, Lite, Plus, Edge, Go, Studio, Fold, Neo, Sport, Prime")

REAL_PRODUCTS = {
    "device": words("""
iPhone 15, iPhone 14 Pro, Galaxy S24, Galaxy Tab S9, Pixel 8, Pixel Watch 2, iPad Air, MacBook Pro,
MacBook Air, Surface Laptop 5, ThinkPad X1 Carbon, PlayStation 5, Xbox Series X, Nintendo Switch,
Steam Deck, Kindle Paperwhite, Apple Watch Ultra, AirPods Pro, Fairphone 5, Raspberry Pi 5,
GoPro Hero 12, Oculus Quest 3, Fitbit Charge 6, Sonos Era 100, Roomba j7, Nokia 3310
"""),
    "software": words("""
Windows 11, Photoshop, Excel, Microsoft Teams, Slack, Zoom, WhatsApp, Telegram, Duolingo,
Figma, Notion, Spotify Premium, Google Maps, Android 14, macOS Sonoma, Ubuntu 24.04, Firefox,
Chrome, Minecraft, Fortnite, Tetris, Wikipedia, ChatGPT, AutoCAD, Blender, Linux Mint
"""),
    "vehicle": words("""
Model Y, Model 3, Corolla, Prius, Golf GTI, Civic, Ioniq 5, Leaf, Mustang Mach-E, Defender,
Vespa Primavera, Transit Connect, Boeing 787, Airbus A320, Cybertruck, Polestar 2
"""),
    "other": words("""
Coca-Cola Zero, Red Bull, Nespresso Vertuo, Air Jordan 1, Stanley Cup tumbler, Lego Technic,
Monopoly, Rubik's Cube, Nutella, Heinz ketchup, Dyson V15, Thermomix TM6, Instant Pot
"""),
}

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
MONTH_ABBR = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
