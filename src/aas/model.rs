//! Serde types for the subset of the AAS v3 metamodel (IDTA-01001-3-0) that the gateway reads
//! and produces, in the official JSON form (camelCase, `modelType` on every Referable).
//!
//! The live store keeps environments as `serde_json::Value` (see [`crate::aas::Environment`]):
//! it serves templates back byte-for-byte in structure and the hot path updates values in place.
//! These types are the gate in front of it: every environment is parsed through them at load,
//! so a typo in a template (`"valueType": "xs:dobule"`, a Range without `valueType`, a key type
//! that does not exist) is reported with its JSON path before the gateway starts, and
//! [`validate`] adds the constraints serde cannot express (idShort syntax, unique idShorts,
//! no idShort on list items, value lexical forms).
//!
//! Typed SubmodelElements: Property, MultiLanguageProperty, Range, File, Blob,
//! ReferenceElement, SubmodelElementCollection, SubmodelElementList, Capability. The kinds the
//! gateway never maps values to (Entity, Operation, RelationshipElement,
//! AnnotatedRelationshipElement, BasicEventElement) are accepted as opaque JSON objects, so
//! standard templates that contain them (e.g. a bill of material of Entities) still load and are
//! served unchanged; only their idShort is checked. An unknown `modelType` is an error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::XsType;

/// A string in one language (`LangStringTextType`, `LangStringNameType`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LangString {
    /// BCP 47 language tag, e.g. `en`, `de-DE`.
    pub language: String,
    /// The text in that language.
    pub text: String,
}

/// `ReferenceTypes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReferenceType {
    /// Points outside the AAS world (an IRDI, an IRI of a dictionary, ...).
    ExternalReference,
    /// Points to a Referable inside an AAS environment.
    ModelReference,
}

/// `KeyTypes`: what a key of a reference points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum KeyType {
    AnnotatedRelationshipElement,
    AssetAdministrationShell,
    BasicEventElement,
    Blob,
    Capability,
    ConceptDescription,
    DataElement,
    Entity,
    EventElement,
    File,
    FragmentReference,
    GlobalReference,
    Identifiable,
    MultiLanguageProperty,
    Operation,
    Property,
    Range,
    Referable,
    ReferenceElement,
    RelationshipElement,
    Submodel,
    SubmodelElement,
    SubmodelElementCollection,
    SubmodelElementList,
}

/// One key of a [`Reference`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Key {
    /// What the key points to.
    #[serde(rename = "type")]
    pub key_type: KeyType,
    /// Identifier, idShort or list index, depending on `type`.
    pub value: String,
}

/// A reference (semanticId, submodel reference, ReferenceElement value, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// External or model reference.
    #[serde(rename = "type")]
    pub reference_type: ReferenceType,
    /// Semantic id of the referred element, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referred_semantic_id: Option<Box<Reference>>,
    /// The keys, outermost first.
    pub keys: Vec<Key>,
}

impl Reference {
    /// An external reference with a single `GlobalReference` key: the usual form of a semanticId.
    pub fn global(value: &str) -> Reference {
        Reference {
            reference_type: ReferenceType::ExternalReference,
            referred_semantic_id: None,
            keys: vec![Key {
                key_type: KeyType::GlobalReference,
                value: value.to_string(),
            }],
        }
    }
}

/// `DataTypeDefXsd`: the 30 XSD value types of the metamodel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum DataTypeDefXsd {
    #[serde(rename = "xs:anyURI")]
    AnyUri,
    #[serde(rename = "xs:base64Binary")]
    Base64Binary,
    #[serde(rename = "xs:boolean")]
    Boolean,
    #[serde(rename = "xs:byte")]
    Byte,
    #[serde(rename = "xs:date")]
    Date,
    #[serde(rename = "xs:dateTime")]
    DateTime,
    #[serde(rename = "xs:decimal")]
    Decimal,
    #[serde(rename = "xs:double")]
    Double,
    #[serde(rename = "xs:duration")]
    Duration,
    #[serde(rename = "xs:float")]
    Float,
    #[serde(rename = "xs:gDay")]
    GDay,
    #[serde(rename = "xs:gMonth")]
    GMonth,
    #[serde(rename = "xs:gMonthDay")]
    GMonthDay,
    #[serde(rename = "xs:gYear")]
    GYear,
    #[serde(rename = "xs:gYearMonth")]
    GYearMonth,
    #[serde(rename = "xs:hexBinary")]
    HexBinary,
    #[serde(rename = "xs:int")]
    Int,
    #[serde(rename = "xs:integer")]
    Integer,
    #[serde(rename = "xs:long")]
    Long,
    #[serde(rename = "xs:negativeInteger")]
    NegativeInteger,
    #[serde(rename = "xs:nonNegativeInteger")]
    NonNegativeInteger,
    #[serde(rename = "xs:nonPositiveInteger")]
    NonPositiveInteger,
    #[serde(rename = "xs:positiveInteger")]
    PositiveInteger,
    #[serde(rename = "xs:short")]
    Short,
    #[serde(rename = "xs:string")]
    String,
    #[serde(rename = "xs:time")]
    Time,
    #[serde(rename = "xs:unsignedByte")]
    UnsignedByte,
    #[serde(rename = "xs:unsignedInt")]
    UnsignedInt,
    #[serde(rename = "xs:unsignedLong")]
    UnsignedLong,
    #[serde(rename = "xs:unsignedShort")]
    UnsignedShort,
}

impl DataTypeDefXsd {
    /// The gateway's own value type for this XSD type, when the gateway can map live values
    /// onto it (`None` for e.g. `xs:gYear`, which templates may use for static data).
    pub fn xs_type(self) -> Option<XsType> {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().and_then(|s| s.parse().ok()))
    }
}

/// `QualifierKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum QualifierKind {
    ValueQualifier,
    ConceptQualifier,
    TemplateQualifier,
}

/// A qualifier (e.g. `Multiplicity` in templates, `ValueQuality` in time series records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Qualifier {
    /// Semantic definition of the qualifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_id: Option<Reference>,
    /// Further semantic definitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplemental_semantic_ids: Option<Vec<Reference>>,
    /// Value, concept or template qualifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<QualifierKind>,
    /// Qualifier type, e.g. `Multiplicity`.
    #[serde(rename = "type")]
    pub qualifier_type: String,
    /// XSD type of `value`.
    pub value_type: DataTypeDefXsd,
    /// The qualifier value in lexical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Reference to a coded value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_id: Option<Reference>,
}

/// The attributes every SubmodelElement shares (Referable, HasSemantics, Qualifiable,
/// HasDataSpecification, HasExtensions). Extensions and data specifications are kept as JSON:
/// the gateway passes them through without interpreting them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ElementCommon {
    /// Extensions, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<Value>>,
    /// Category (deprecated in v3 but allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Short name, unique among siblings; absent for items of a SubmodelElementList.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_short: Option<String>,
    /// Display names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Vec<LangString>>,
    /// Descriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Vec<LangString>>,
    /// Semantic definition (ECLASS IRDI, IDTA template IRI, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_id: Option<Reference>,
    /// Further semantic definitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplemental_semantic_ids: Option<Vec<Reference>>,
    /// Qualifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualifiers: Option<Vec<Qualifier>>,
    /// Embedded data specifications (IEC 61360), passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded_data_specifications: Option<Vec<Value>>,
}

/// A Property: one typed value in XSD lexical form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    /// Shared attributes.
    #[serde(flatten)]
    pub common: ElementCommon,
    /// XSD type of `value`.
    pub value_type: DataTypeDefXsd,
    /// The value, always a string in the lexical form of `valueType`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Reference to a coded value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_id: Option<Reference>,
}

/// A MultiLanguageProperty: one text per language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultiLanguageProperty {
    /// Shared attributes.
    #[serde(flatten)]
    pub common: ElementCommon,
    /// The texts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Vec<LangString>>,
    /// Reference to a coded value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_id: Option<Reference>,
}

/// A Range: min and max of one XSD type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Range {
    /// Shared attributes.
    #[serde(flatten)]
    pub common: ElementCommon,
    /// XSD type of `min` and `max`.
    pub value_type: DataTypeDefXsd,
    /// Lower bound (lexical form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    /// Upper bound (lexical form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

/// A File: a path or URI and its content type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    /// Shared attributes.
    #[serde(flatten)]
    pub common: ElementCommon,
    /// Path inside an AASX package or an absolute URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// MIME type, e.g. `application/pdf`.
    pub content_type: String,
}

/// A Blob: bytes (base64) and their content type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    /// Shared attributes.
    #[serde(flatten)]
    pub common: ElementCommon,
    /// The bytes, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// MIME type.
    pub content_type: String,
}

/// A ReferenceElement: a reference as value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceElement {
    /// Shared attributes.
    #[serde(flatten)]
    pub common: ElementCommon,
    /// The reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Reference>,
}

/// A SubmodelElementCollection: a struct of named elements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmodelElementCollection {
    /// Shared attributes.
    #[serde(flatten)]
    pub common: ElementCommon,
    /// The children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Vec<SubmodelElement>>,
}

/// `AasSubmodelElements`: the element kinds a list may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum AasSubmodelElements {
    AnnotatedRelationshipElement,
    BasicEventElement,
    Blob,
    Capability,
    DataElement,
    Entity,
    EventElement,
    File,
    MultiLanguageProperty,
    Operation,
    Property,
    Range,
    ReferenceElement,
    RelationshipElement,
    SubmodelElement,
    SubmodelElementCollection,
    SubmodelElementList,
}

/// A SubmodelElementList: an ordered list of elements of one kind, without idShorts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmodelElementList {
    /// Shared attributes.
    #[serde(flatten)]
    pub common: ElementCommon,
    /// Whether the order of the items carries meaning (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_relevant: Option<bool>,
    /// Semantic id every item shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_id_list_element: Option<Reference>,
    /// Kind of every item.
    pub type_value_list_element: AasSubmodelElements,
    /// Value type of every item (for Property/Range items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type_list_element: Option<DataTypeDefXsd>,
    /// The items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Vec<SubmodelElement>>,
}

/// A Capability: semantics only, no value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capability {
    /// Shared attributes.
    #[serde(flatten)]
    pub common: ElementCommon,
}

/// An element of a kind the gateway passes through without interpreting: its JSON members
/// (without `modelType`, which serde keeps as the variant).
pub type Opaque = serde_json::Map<String, Value>;

/// One submodel element, tagged by `modelType`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "modelType")]
#[allow(missing_docs)]
pub enum SubmodelElement {
    Property(Property),
    MultiLanguageProperty(MultiLanguageProperty),
    Range(Range),
    File(File),
    Blob(Blob),
    ReferenceElement(ReferenceElement),
    SubmodelElementCollection(SubmodelElementCollection),
    SubmodelElementList(SubmodelElementList),
    Capability(Capability),
    Entity(Opaque),
    Operation(Opaque),
    RelationshipElement(Opaque),
    AnnotatedRelationshipElement(Opaque),
    BasicEventElement(Opaque),
}

impl SubmodelElement {
    /// The shared attributes of a typed element kind (`None` for the opaque ones).
    pub fn common(&self) -> Option<&ElementCommon> {
        Some(match self {
            SubmodelElement::Property(e) => &e.common,
            SubmodelElement::MultiLanguageProperty(e) => &e.common,
            SubmodelElement::Range(e) => &e.common,
            SubmodelElement::File(e) => &e.common,
            SubmodelElement::Blob(e) => &e.common,
            SubmodelElement::ReferenceElement(e) => &e.common,
            SubmodelElement::SubmodelElementCollection(e) => &e.common,
            SubmodelElement::SubmodelElementList(e) => &e.common,
            SubmodelElement::Capability(e) => &e.common,
            _ => return None,
        })
    }

    /// The idShort, for every kind.
    pub fn id_short(&self) -> Option<&str> {
        match self {
            SubmodelElement::Entity(m)
            | SubmodelElement::Operation(m)
            | SubmodelElement::RelationshipElement(m)
            | SubmodelElement::AnnotatedRelationshipElement(m)
            | SubmodelElement::BasicEventElement(m) => m.get("idShort").and_then(Value::as_str),
            _ => self.common().and_then(|c| c.id_short.as_deref()),
        }
    }

    /// The `modelType` name.
    pub fn model_type(&self) -> &'static str {
        match self {
            SubmodelElement::Property(_) => "Property",
            SubmodelElement::MultiLanguageProperty(_) => "MultiLanguageProperty",
            SubmodelElement::Range(_) => "Range",
            SubmodelElement::File(_) => "File",
            SubmodelElement::Blob(_) => "Blob",
            SubmodelElement::ReferenceElement(_) => "ReferenceElement",
            SubmodelElement::SubmodelElementCollection(_) => "SubmodelElementCollection",
            SubmodelElement::SubmodelElementList(_) => "SubmodelElementList",
            SubmodelElement::Capability(_) => "Capability",
            SubmodelElement::Entity(_) => "Entity",
            SubmodelElement::Operation(_) => "Operation",
            SubmodelElement::RelationshipElement(_) => "RelationshipElement",
            SubmodelElement::AnnotatedRelationshipElement(_) => "AnnotatedRelationshipElement",
            SubmodelElement::BasicEventElement(_) => "BasicEventElement",
        }
    }
}

/// `AdministrativeInformation` of an Identifiable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdministrativeInformation {
    /// Embedded data specifications, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded_data_specifications: Option<Vec<Value>>,
    /// Version, e.g. `3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Revision, e.g. `0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Who created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<Reference>,
    /// Identifier of the submodel template this follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
}

/// `ModellingKind` of a submodel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum ModellingKind {
    Template,
    Instance,
}

/// Marker for the `modelType` of a Submodel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum SubmodelTag {
    Submodel,
}

/// A Submodel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Submodel {
    /// Shared attributes (idShort is mandatory in practice but optional in the metamodel).
    #[serde(flatten)]
    pub common: ElementCommon,
    /// Version and template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub administration: Option<AdministrativeInformation>,
    /// Globally unique identifier.
    pub id: String,
    /// Template or instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ModellingKind>,
    /// The elements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submodel_elements: Option<Vec<SubmodelElement>>,
    /// Always `Submodel`.
    pub model_type: SubmodelTag,
}

/// `AssetKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum AssetKind {
    Type,
    Instance,
    NotApplicable,
}

/// A specific asset id (serial number, customer part id, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecificAssetId {
    /// Semantic definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_id: Option<Reference>,
    /// Further semantic definitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplemental_semantic_ids: Option<Vec<Reference>>,
    /// Key name, e.g. `SerialNumber`.
    pub name: String,
    /// The id.
    pub value: String,
    /// Who issued the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_subject_id: Option<Reference>,
}

/// A thumbnail or other resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// Path or URI.
    pub path: String,
    /// MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// `AssetInformation` of a shell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetInformation {
    /// Type, instance or not applicable.
    pub asset_kind: AssetKind,
    /// Global id of the asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_asset_id: Option<String>,
    /// Further ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specific_asset_ids: Option<Vec<SpecificAssetId>>,
    /// Id of the asset type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_type: Option<String>,
    /// Thumbnail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_thumbnail: Option<Resource>,
}

/// Marker for the `modelType` of a shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum ShellTag {
    AssetAdministrationShell,
}

/// An Asset Administration Shell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetAdministrationShell {
    /// Extensions, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<Value>>,
    /// Category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Short name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_short: Option<String>,
    /// Display names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Vec<LangString>>,
    /// Descriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Vec<LangString>>,
    /// Version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub administration: Option<AdministrativeInformation>,
    /// Globally unique identifier.
    pub id: String,
    /// Embedded data specifications, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded_data_specifications: Option<Vec<Value>>,
    /// The shell this one was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_from: Option<Reference>,
    /// The asset.
    pub asset_information: AssetInformation,
    /// References to the submodels of this shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submodels: Option<Vec<Reference>>,
    /// Always `AssetAdministrationShell`.
    pub model_type: ShellTag,
}

/// Marker for the `modelType` of a concept description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum ConceptDescriptionTag {
    ConceptDescription,
}

/// A ConceptDescription (the definition behind a semanticId).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConceptDescription {
    /// Extensions, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<Value>>,
    /// Category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Short name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_short: Option<String>,
    /// Display names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Vec<LangString>>,
    /// Descriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Vec<LangString>>,
    /// Version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub administration: Option<AdministrativeInformation>,
    /// Identifier (often the semanticId it defines).
    pub id: String,
    /// IEC 61360 content (preferred name, unit, ...), passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded_data_specifications: Option<Vec<Value>>,
    /// Concepts this one is a case of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_case_of: Option<Vec<Reference>>,
    /// Always `ConceptDescription`.
    pub model_type: ConceptDescriptionTag,
}

/// An AAS environment document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// Shells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_administration_shells: Option<Vec<AssetAdministrationShell>>,
    /// Submodels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submodels: Option<Vec<Submodel>>,
    /// Concept descriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept_descriptions: Option<Vec<ConceptDescription>>,
}

/// Parses an environment through the typed model. The error names the JSON path of the
/// offending value, e.g. `submodels[2].submodelElements[4].valueType: unknown variant ...`.
pub fn parse_environment(doc: &Value) -> Result<Environment, String> {
    serde_path_to_error::deserialize::<_, Environment>(doc).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// Checks the constraints serde cannot: idShort syntax (AASd-002), unique idShorts among
/// siblings (AASd-022), no idShort on SubmodelElementList items (AASd-120), list item kinds
/// (AASd-108/109), lexical forms of Property values the gateway knows. Returns every problem,
/// each with its JSON path.
pub fn validate(env: &Environment) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, shell) in env.asset_administration_shells.iter().flatten().enumerate() {
        let at = format!("assetAdministrationShells[{i}]");
        if let Some(id_short) = &shell.id_short {
            check_id_short(id_short, &at, &mut errors);
        }
        if shell.id.is_empty() {
            errors.push(format!("{at}.id: must not be empty"));
        }
        for (k, r) in shell.submodels.iter().flatten().enumerate() {
            let ok = r.reference_type == ReferenceType::ModelReference
                && r.keys.len() == 1
                && r.keys[0].key_type == KeyType::Submodel;
            if !ok {
                errors.push(format!(
                    "{at}.submodels[{k}]: must be a ModelReference with one Submodel key"
                ));
            }
        }
    }
    for (i, sm) in env.submodels.iter().flatten().enumerate() {
        let at = format!("submodels[{i}]");
        if let Some(id_short) = &sm.common.id_short {
            check_id_short(id_short, &at, &mut errors);
        }
        if sm.id.is_empty() {
            errors.push(format!("{at}.id: must not be empty"));
        }
        if let Some(els) = &sm.submodel_elements {
            check_elements(els, &format!("{at}.submodelElements"), false, &mut errors);
        }
    }
    errors
}

fn check_id_short(id_short: &str, at: &str, errors: &mut Vec<String>) {
    let bytes = id_short.as_bytes();
    let ok = bytes.len() >= 2
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphabetic()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        && bytes[bytes.len() - 1] != b'-';
    // A single letter is a valid idShort too (the regex's last group matches it).
    let single = bytes.len() == 1 && bytes[0].is_ascii_alphabetic();
    if !ok && !single {
        errors.push(format!(
            "{at}.idShort: {id_short:?} does not match ^[a-zA-Z][a-zA-Z0-9_-]*[a-zA-Z0-9_]+$"
        ));
    }
}

fn check_elements(els: &[SubmodelElement], at: &str, in_list: bool, errors: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    for (i, el) in els.iter().enumerate() {
        let here = format!("{at}[{i}]");
        match (el.id_short(), in_list) {
            (Some(s), true) => errors.push(format!(
                "{here}.idShort: items of a SubmodelElementList have no idShort (AASd-120), found {s:?}"
            )),
            (Some(s), false) => {
                check_id_short(s, &here, errors);
                if !seen.insert(s) {
                    errors.push(format!("{here}.idShort: {s:?} is used twice among siblings"));
                }
            }
            (None, false) => errors.push(format!("{here}: idShort is required here")),
            (None, true) => {}
        }
        match el {
            SubmodelElement::Property(p) => {
                if let (Some(v), Some(t)) = (&p.value, p.value_type.xs_type()) {
                    if let Err(e) = t.parse_lexical(v) {
                        errors.push(format!("{here}.value: {e}"));
                    }
                }
            }
            SubmodelElement::SubmodelElementCollection(c) => {
                if let Some(v) = &c.value {
                    check_elements(v, &format!("{here}.value"), false, errors);
                }
            }
            SubmodelElement::SubmodelElementList(l) => {
                let wanted = serde_json::to_value(l.type_value_list_element).unwrap_or_default();
                for (k, item) in l.value.iter().flatten().enumerate() {
                    if wanted.as_str() != Some(item.model_type()) {
                        errors.push(format!(
                            "{here}.value[{k}]: is a {}, but typeValueListElement is {}",
                            item.model_type(),
                            wanted.as_str().unwrap_or("?")
                        ));
                    }
                    if let (SubmodelElement::Property(p), Some(t)) =
                        (item, l.value_type_list_element)
                    {
                        if p.value_type != t {
                            errors.push(format!(
                                "{here}.value[{k}].valueType: differs from valueTypeListElement (AASd-109)"
                            ));
                        }
                    }
                }
                if let Some(v) = &l.value {
                    check_elements(v, &format!("{here}.value"), true, errors);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_templates_round_trip_unchanged() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/aas-templates");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let templates = std::path::Path::new(dir).join("templates");
        if templates.is_dir() {
            files.extend(
                std::fs::read_dir(templates)
                    .unwrap()
                    .map(|e| e.unwrap().path()),
            );
        }
        let files: Vec<_> = files
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        assert!(files.len() >= 2);
        for file in files {
            let doc: Value =
                serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let typed =
                parse_environment(&doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(validate(&typed), Vec::<String>::new(), "{}", file.display());
            let back = serde_json::to_value(&typed).unwrap();
            assert_eq!(back, doc, "{} does not round-trip", file.display());
        }
    }

    #[test]
    fn kinds_the_gateway_does_not_interpret_pass_through_unchanged() {
        let doc = serde_json::json!({"submodels": [{"id": "urn:x", "modelType": "Submodel",
        "submodelElements": [
            {"modelType": "Entity", "idShort": "Motor", "entityType": "SelfManagedEntity",
             "globalAssetId": "urn:motor", "statements": [
                {"modelType": "Property", "idShort": "P", "valueType": "xs:int", "value": "1"}]},
            {"modelType": "Operation", "idShort": "Reset"}
        ]}]});
        let typed = parse_environment(&doc).unwrap();
        assert!(validate(&typed).is_empty());
        assert_eq!(serde_json::to_value(&typed).unwrap(), doc);
        let bad = serde_json::json!({"submodels": [{"id": "urn:x", "modelType": "Submodel",
            "submodelElements": [{"modelType": "Gadget", "idShort": "G"}]}]});
        let e = parse_environment(&bad).unwrap_err();
        assert!(
            e.starts_with("submodels[0].submodelElements[0]") && e.contains("Gadget"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_json_path() {
        let doc = serde_json::json!({"submodels": [{"id": "urn:x", "modelType": "Submodel",
            "submodelElements": [{"modelType": "Property", "idShort": "A", "valueType": "xs:dobule"}]}]});
        let e = parse_environment(&doc).unwrap_err();
        assert!(e.starts_with("submodels[0].submodelElements[0]"), "{e}");
        assert!(e.contains("xs:dobule"), "{e}");
    }

    #[test]
    fn constraints_are_checked_with_paths() {
        let doc = serde_json::json!({"submodels": [{"id": "urn:x", "modelType": "Submodel",
        "submodelElements": [
            {"modelType": "Property", "idShort": "A", "valueType": "xs:int", "value": "abc"},
            {"modelType": "Property", "idShort": "A", "valueType": "xs:int"},
            {"modelType": "Property", "idShort": "1bad", "valueType": "xs:int"},
            {"modelType": "SubmodelElementList", "idShort": "L", "typeValueListElement": "Property",
             "valueTypeListElement": "xs:double",
             "value": [{"modelType": "Property", "idShort": "X", "valueType": "xs:double"}]}
        ]}]});
        let errors = validate(&parse_environment(&doc).unwrap());
        let all = errors.join("\n");
        assert!(
            all.contains("submodels[0].submodelElements[0].value: \"abc\" is not a valid xs:int"),
            "{all}"
        );
        assert!(
            all.contains("submodelElements[1].idShort: \"A\" is used twice"),
            "{all}"
        );
        assert!(
            all.contains("submodelElements[2].idShort: \"1bad\""),
            "{all}"
        );
        assert!(
            all.contains("submodelElements[3].value[0].idShort: items of a SubmodelElementList"),
            "{all}"
        );
        assert_eq!(errors.len(), 4, "{all}");
    }
}
